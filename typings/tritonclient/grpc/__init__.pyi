from typing import Any

from . import model_config_pb2 as model_config_pb2

def __getattr__(name: str) -> Any: ...
