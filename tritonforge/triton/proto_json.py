"""gRPC answers as the JSON Triton's HTTP API gives: what the clients return from model_metadata, model_config and
statistics, whichever protocol they speak.

tritonclient's ``as_json`` (protobuf's JSON mapping) wrote 64-bit integers as strings (``dims: ["384"]``, against
HTTP's ``[384]``) and left out every field at its default (``instance_group``, zero counters such as
``execution_count``), so code reading them broke on switching protocol (client audit). Here defaults are written and
64-bit integers are numbers, found by the message's own descriptors.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_INT64 = frozenset({
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
})


def as_http_json(message: Message) -> dict[str, Any]:
    """``message`` as a JSON object with its field names, its defaults, and 64-bit integers as numbers."""
    value = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(message.DESCRIPTOR, value)


def _numbers(descriptor: Descriptor, value: dict[str, Any]) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name not in value:
            continue
        found = value[field.name]
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value[field.name] = {key: _one(entry.fields_by_name["value"], item) for key, item in found.items()}
        elif _repeated(field):
            value[field.name] = [_one(field, item) for item in found]
        else:
            value[field.name] = _one(field, found)
    return value


def _repeated(field: FieldDescriptor) -> bool:
    try:
        return bool(field.is_repeated)  # protobuf >= 5.29 (label is deprecated in 6)
    except AttributeError:
        return field.label == FieldDescriptor.LABEL_REPEATED


def _one(field: FieldDescriptor, item: Any) -> Any:
    if field.message_type is not None and isinstance(item, dict):
        return _numbers(field.message_type, item)
    if field.type in _INT64 and isinstance(item, str):
        return int(item)
    return item
