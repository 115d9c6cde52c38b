# Partial stubs for tritonclient (which ships no types): only the ModelConfig protobuf messages are typed; every
# other name stays Any. See typings/README.md.
from typing import Any

def __getattr__(name: str) -> Any: ...
