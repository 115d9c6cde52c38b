"""The validator's rule modules (one copy of each of Triton's rules); the API is :mod:`tritonforge.validator`."""
