"""Reading YAML the user wrote (specs, split files): a key given twice is an error, and errors name the file."""

from __future__ import annotations

from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: PyYAML keeps the last one
    silently, so a second entry with a model's key would replace the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *anchor' merges; explicit keys override merged ones, as YAML says
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, name: str) -> Any:
    """The data of a YAML document read from the file ``name``; yaml.YAMLError (naming the file, line and column)
    when it is not valid YAML or gives a key twice in one mapping."""
    loader = UniqueKeyLoader(text)  # a SafeLoader subclass
    loader.name = name  # YAML's errors then say `in "<file>", line 4`, not `in "<unicode string>"`
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
