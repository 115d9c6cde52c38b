"""One copy of each Triton rule: the validator, the spec and the DAG API answer from the same rule functions."""

from __future__ import annotations

import re

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


# a copy of the real-number rule in a folder another change owns; drop the entry once it asks values.is_real
_REAL_NUMBER_COPIES_LEFT: set[str] = set()


def _real_number_checks_written_out() -> list[str]:
    """Conditions that test "a real number, not a bool (and not NaN or inf)" themselves instead of asking
    tritonforge.values.is_real: an isinstance against float, ``int | float`` or numbers.Real next to one against bool,
    or a math.isnan/isfinite/isinf call anywhere. The copies drifted: ``int | float`` refused
    numpy.float32 and numpy.int64 where numbers.Real took them, one refused inf and the next sent it on."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    nonfinite = {"math.isnan", "math.isfinite", "math.isinf"}
    found = set()
    for folder in ("tritonforge", "builders", "ensembles", "clients", "deploy", "gateway"):
        for path in sorted((root / folder).rglob("*.py")):
            if path == root / "tritonforge" / "values.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in nonfinite:
                    found.add(f"{path.relative_to(root)}:{node.lineno}")
                if not isinstance(node, ast.BoolOp):
                    continue
                calls = [call for call in ast.walk(node) if isinstance(call, ast.Call)]
                kinds = {
                    ast.unparse(call.args[1])
                    for call in calls
                    if isinstance(call.func, ast.Name) and call.func.id == "isinstance" and len(call.args) == 2
                }
                if any("float" in kind or "Real" in kind for kind in kinds) and "bool" in kinds:
                    found.add(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def test_a_real_number_that_is_not_a_bool_is_one_rule() -> None:
    found = _real_number_checks_written_out()
    assert [where for where in found if where.split(":")[0] not in _REAL_NUMBER_COPIES_LEFT] == []


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


def test_real_numbers_are_ints_floats_and_numpy_scalars_but_no_bool_nan_or_inf() -> None:
    import numpy as np

    from tritonforge.values import is_real

    taken = (0, -3, 0.5, 2**70, np.float32(0.25), np.float64(-1e300), np.float16(2), np.int64(4), np.uint8(7))
    assert all(is_real(v) for v in taken)
    refused = (True, np.bool_(False), float("nan"), float("inf"), -np.inf, np.float32("nan"), 10**400, "0.5", None, 1j)
    assert not any(is_real(v) for v in refused)
    assert all(is_real(v, finite=False) for v in (float("nan"), -np.inf, 10**400, np.float32(1)))
    assert not any(is_real(v, finite=False) for v in (True, np.bool_(True), "nan", None))


_NOT_REAL = (float("nan"), float("inf"), float("-inf"), True, "1")  # the first three were taken by some copies


@pytest.mark.parametrize("bad", _NOT_REAL)
def test_each_caller_refuses_what_is_not_a_finite_real_in_its_own_words(bad: object, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tritonforge.bench.run import run_bench
    from tritonforge.clients import ClientOptions, RetryPolicy
    from tritonforge.clients.generation import Sampling, rag_inputs
    from tritonforge.errors import BenchOptionsError, InvalidInputError, ReleaseError, ServerError
    from tritonforge.releases import TritonControl
    from tritonforge.server import TritonServer
    from tritonforge.triton.connection import Connection

    def refused(error: type[Exception], message: str, call) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(error, match=re.escape(message)):
            call()

    refused(InvalidInputError, f"timeout={bad!r} must be > 0 seconds (or None for no deadline)",
            lambda: ClientOptions(timeout=bad))  # type: ignore[arg-type]
    refused(InvalidInputError, f"backoff={bad!r} and max_backoff=2.0 must be >= 0 seconds",
            lambda: RetryPolicy(backoff=bad))  # type: ignore[arg-type]
    refused(InvalidInputError, f"jitter={bad!r} must be within [0, 1]", lambda: RetryPolicy(jitter=bad))  # type: ignore[arg-type]
    with Connection("127.0.0.1:1", "http", retries=0) as triton:
        refused(InvalidInputError, f"timeout={bad!r} must be > 0 seconds (a number; None: the client's default)",
                lambda: triton._timeout(bad))  # type: ignore[arg-type]
    refused(ReleaseError, f"Triton timeout must be a number of seconds > 0, got {bad!r}",
            lambda: TritonControl("127.0.0.1:1", timeout=bad))  # type: ignore[arg-type]
    refused(ServerError, f"startup_timeout={bad!r} must be a number > 0",
            lambda: TritonServer(tmp_path, startup_timeout=bad))  # type: ignore[arg-type]
    refused(ServerError, f"exit_timeout={bad!r} must be a number >= 0",
            lambda: TritonServer(tmp_path, exit_timeout=bad))  # type: ignore[arg-type]
    refused(InvalidInputError, f"temperature must be a number >= 0, got {bad!r}",
            lambda: Sampling(temperature=bad).check())  # type: ignore[arg-type]
    refused(InvalidInputError, f"top_p must be in [0, 1], got {bad}", lambda: Sampling(top_p=bad).check())  # type: ignore[arg-type]
    refused(InvalidInputError, f"min_score must be a finite number, got {bad!r}",
            lambda: rag_inputs("q", top_k=None, top_n=None, max_tokens=None, sampling={}, stream=False, min_score=bad))  # type: ignore[arg-type]
    refused(BenchOptionsError, f"rate={bad} (--rate) must be > 0 requests/s",
            lambda: run_bench("127.0.0.1:1", "m", rate=bad))  # type: ignore[arg-type]


def test_numpy_scalars_are_taken_where_a_real_number_is_and_kept_as_float(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from tritonforge.bench.run import run_bench
    from tritonforge.clients import ClientOptions, RetryPolicy
    from tritonforge.clients.generation import Sampling, generation_inputs, rag_inputs
    from tritonforge.errors import BenchOptionsError
    from tritonforge.gateway.splits import parse_splits
    from tritonforge.releases import TritonControl
    from tritonforge.server import TritonServer
    from tritonforge.triton.connection import Connection

    options = ClientOptions(timeout=np.float32(2.5), retry=RetryPolicy(backoff=np.int64(1), jitter=np.float64(0.5)))
    assert type(options.timeout) is float and options.timeout == 2.5
    assert [type(getattr(options.retry, n)) for n in ("backoff", "max_backoff", "jitter")] == [float] * 3
    with Connection("127.0.0.1:1", "http", retries=0) as triton:
        assert triton._timeout(np.float32(1.5)) == 1.5 and type(triton._timeout(np.int64(3))) is float
    control = TritonControl("127.0.0.1:1", timeout=np.float32(5))
    assert type(control.timeout) is float and control.timeout == 5.0
    server = TritonServer(tmp_path, startup_timeout=np.float32(1.5), exit_timeout=np.int64(0))
    assert (server.startup_timeout, server.exit_timeout) == (1.5, 0.0)
    assert type(server.startup_timeout) is float and type(server.exit_timeout) is float

    inputs = generation_inputs("hi", Sampling(temperature=np.float32(0.5), top_p=np.float64(0.9)), stream=False)
    assert inputs["temperature"].dtype == np.float32 and float(inputs["top_p"][0, 0]) == pytest.approx(0.9)
    rag = rag_inputs("q", top_k=None, top_n=None, max_tokens=None, sampling={}, stream=False, min_score=np.float32(-1))
    assert rag["MIN_SCORE"].tolist() == [[-1.0]]
    # the rate check passes a numpy rate on to the next one (max_inflight), which needs no server
    with pytest.raises(BenchOptionsError, match="max_inflight=0 must be within"):
        run_bench("127.0.0.1:1", "m", rate=np.float32(2), max_inflight=0)

    splits = parse_splits({"splits": {"s": {
        "control": {"model": "a", "weight": np.float32(1.5)}, "treatment": {"model": "b", "weight": np.int64(1)}}}})
    assert [arm.weight for arm in splits.splits["s"].arms] == [1.5, 1.0]
    assert all(type(arm.weight) is float for arm in splits.splits["s"].arms)


@pytest.mark.parametrize(("weight", "message"), [
    (float("nan"), "Input should be a finite number"), (float("inf"), "Input should be a finite number"),
    (True, "must be a number >= 0, got True"), ("ten", "must be a number >= 0, got 'ten'"),
])
def test_a_split_weight_is_refused_in_the_words_it_was(weight: object, message: str) -> None:
    from tritonforge.errors import SplitConfigError
    from tritonforge.gateway.splits import parse_splits

    with pytest.raises(SplitConfigError, match=re.escape(f"splits.s.control.weight: {message}")):
        parse_splits({"splits": {"s": {"control": {"model": "a", "weight": weight}}}})
