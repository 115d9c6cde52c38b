"""config.pbtxt <-> ModelConfig messages, with protobuf's own text format (never string templates)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import text_format
from google.protobuf.message import Message

from tritonforge.errors import Problem, ValidationError

if TYPE_CHECKING:  # typed by typings/tritonclient (mypy only): tritonclient ships no stubs
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def model_config_pb2():  # type: ignore[no-untyped-def]
    """The ModelConfig protobuf module shipped with tritonclient (imported lazily: grpc is heavy)."""
    from tritonclient.grpc import model_config_pb2 as pb

    return pb


def render_config(config: Message) -> str:
    """Serialize a ModelConfig deterministically (field-number order), as Triton's own examples are written."""
    return text_format.MessageToString(config, as_utf8=True)


def parse_config_text(text: str, where: str = "config.pbtxt") -> ModelConfig:
    """Parse config.pbtxt text; a syntax error reads as Triton's 'failed to read text proto from <path>'."""
    pb = model_config_pb2()
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ValidationError([Problem(where, f"failed to read text proto from {where}: {err}")]) from None
    return config


def read_config(path: str | Path) -> ModelConfig:
    """A config.pbtxt as Triton reads it: bytes that are not UTF-8 (a Latin-1 comment, say) do not stop Triton, so
    they do not stop this either (read as Latin-1 then: every byte is a character)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return parse_config_text(text, str(path))
