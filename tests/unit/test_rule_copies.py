"""One copy of each Triton rule: the validator, the spec and the DAG API answer from the same rule functions."""

from __future__ import annotations

import pytest

from tritonforge.ensembles.dag import Ensemble, ModelIO
from tritonforge.errors import SpecError, ValidationError
from tritonforge.spec import parse_spec
from tritonforge.validation import ensemble_rules as rules
from tritonforge.validation.batching_rules import dynamic_batching_problems


def test_ensemble_rules_hold_or_answer_in_tritons_words() -> None:
    prefix = rules.tensor_prefix("e", "T")
    assert rules.inconsistent_type(prefix, "TYPE_FP32", "a", "TYPE_FP32", "b") is None
    assert rules.inconsistent_type(prefix, "TYPE_FP32", "a", "TYPE_INT64", "b") == (
        "in ensemble e, ensemble tensor T: inconsistent data type: TYPE_FP32 is inferred from model a while "
        "TYPE_INT64 is inferred from model b"
    )
    assert rules.inconsistent_shape(prefix, ((-1, 4), (-1, -1, 4), "a"), ((3, 4), (-1, 3, 4), "b")) is None
    assert "inconsistent shape: [-1,4] is inferred from model a while [-1,5] is inferred from model b" in (
        rules.inconsistent_shape(prefix, ((4,), (-1, 4), "a"), ((5,), (-1, 5), "b")) or ""
    )
    assert rules.batch_size_too_small("e", 8, "m", 0) is None  # a non-batching member takes any batch
    assert rules.batch_size_too_small("e", 8, "m", 4) == (
        "ensemble e allows maximum batch size 8, but it contains model m which only allows maximum batch size to be 4"
    )


def test_batching_rules_name_the_field_they_are_about() -> None:
    found = dynamic_batching_problems(
        "m", max_batch_size=8, preferred_batch_sizes=[4, 16], priority_levels=2, default_priority_level=3,
        policy_levels=[5], preserve_ordering=True, delays_on_timeout=True,
    )
    assert [field for field, _ in found] == [
        "preferred_batch_sizes", "default_priority_level", "priority_queue_policy", "preserve_ordering",
        "preserve_ordering",
    ]
    assert all(message.endswith("for m") for _, message in found)


def test_the_dag_and_the_spec_raise_the_rules_own_messages() -> None:
    from tritonforge.config_io import parse_config_text

    member = ModelIO.from_config(parse_config_text(
        'name: "small" max_batch_size: 4 '
        'input { name: "X" data_type: TYPE_FP32 dims: 2 } output { name: "Y" data_type: TYPE_FP32 dims: 2 }'
    ))
    with pytest.raises(ValidationError) as caught:
        Ensemble("e", max_batch_size=8).input("X", "TYPE_FP32", [2]).step(member, inputs={"X": "X"}, outputs={"Y": "Y"})
    assert rules.batch_size_too_small("e", 8, "small", 4) in str(caught.value)

    with pytest.raises(SpecError) as spec_error:
        parse_spec({"name": "s", "target": "cpu", "models": {"m": {
            "kind": "embedding", "checkpoint": "random:bert",
            "dynamic_batching": {"priority_levels": 2, "default_priority_level": 3}}}})
    (_, message), = dynamic_batching_problems(
        None, max_batch_size=None, preferred_batch_sizes=[], priority_levels=2, default_priority_level=3,
        policy_levels=[], preserve_ordering=False, delays_on_timeout=False,
    )
    assert message in str(spec_error.value)


def _whole_number_checks_written_out() -> list[str]:
    """Conditions that test "an int (or numbers.Integral) and not a bool" themselves instead of asking
    tritonforge.values.is_whole: each a second copy of the rule, free to drift (one took numpy ints, the next not)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = set()
    for folder in ("tritonforge", "builders", "ensembles", "clients", "deploy", "gateway"):
        for path in sorted((root / folder).rglob("*.py")):
            if path == root / "tritonforge" / "values.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.BoolOp):
                    continue
                kinds = {
                    ast.unparse(call.args[1])
                    for call in ast.walk(node)
                    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "isinstance"
                    and len(call.args) == 2
                }
                if "bool" in kinds and kinds & {"int", "numbers.Integral", "Integral", "(int,)"}:
                    found.add(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def test_a_whole_number_that_is_not_a_bool_is_one_rule() -> None:
    assert _whole_number_checks_written_out() == []


def test_whole_numbers_are_ints_and_numpy_integers_but_no_bool() -> None:
    import numpy as np

    from tritonforge.values import is_whole

    assert all(is_whole(v) for v in (0, -3, 2**70, np.int64(4), np.int32(-1), np.uint8(7)))
    assert not any(is_whole(v) for v in (True, False, np.bool_(True), 2.0, np.float64(2), "2", None, [1], 1 + 0j))


def test_numpy_integers_are_taken_where_a_whole_number_is_and_kept_as_int(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import numpy as np

    from tritonforge.builders.index import IndexSettings, index_content_hash
    from tritonforge.validator import validate

    validate(tmp_path, gpus=np.int64(2))  # an empty repository is valid; the count was an OptionError
    settings = IndexSettings(type="ivf", nlist=np.int64(4), nprobe=np.int32(2))
    assert type(settings.nlist) is int and type(settings.nprobe) is int
    assert json.dumps(settings.__dict__)  # what the content hash is made of stays plain JSON
    assert index_content_hash([], settings, embedder_hash="e") == index_content_hash(
        [], IndexSettings(type="ivf", nlist=4, nprobe=2), embedder_hash="e"
    )
    from tritonforge.errors import ServerError
    from tritonforge.server import TritonServer

    server = TritonServer(tmp_path, http_port=np.int64(18000), log_verbose=np.int64(1), cache_size_bytes=np.int32(64))
    assert (server.log_verbose, server.cache_size_bytes) == (1, 64) and type(server.log_verbose) is int
    assert [type(p) for p in server._ports] == [int, type(None), type(None)]
    for port in (True, np.bool_(True), 8000.0):
        with pytest.raises(ServerError, match=r"http_port=.* is not a TCP port \(1\.\.65535\)"):
            TritonServer(tmp_path, http_port=port)  # type: ignore[arg-type]
