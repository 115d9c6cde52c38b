"""tritonforge.clients."""
