"""TensorRT-LLM as the spec knows it: the upstream model set's parameters (params), the NGC images and what each
can serve (images), the LLM API model's settings (llmapi), the engine path's build settings (engine_settings), and
the upstream data they are derived from (data/, with the commits they were read at).

This package sits at the spec's level: it imports nothing from the builders, which import it.
"""
