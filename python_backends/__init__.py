"""tritonforge.python_backends."""
