"""tritonforge.builders."""
