"""python_backends/onnx_runner/model.py run OUTSIDE Triton, over the fake `triton_python_backend_utils` in
tests/fake_pb_utils.py, on a small ONNX graph built here. Real-Triton tests of the runner are the embed ones in
tests/integration."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_pb_utils import Request, load_model

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "onnx_runner" / "model.py"


def masked_mean_onnx(path: Path) -> None:
    """EMBEDDING [rows, 2] = (mean of input_ids over the mask, the row's unmasked length): padding-invariant, as an
    encoder's pooled output is, and its second column shows which rows ran together."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids_f", "mask_f"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["total"], keepdims=1),
            helper.make_node("ReduceSum", ["mask_f", "axis1"], ["count"], keepdims=1),
            helper.make_node("Div", ["total", "count"], ["mean"]),
            helper.make_node("Shape", ["input_ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "one"], ["width_i"]),
            helper.make_node("Cast", ["width_i"], ["width"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["count", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "width"], ["width_col"]),
            helper.make_node("Concat", ["mean", "width_col"], ["EMBEDDING"], axis=1),
        ],
        "masked_mean",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["rows", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("EMBEDDING", TensorProto.FLOAT, ["rows", 2])],
        [
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("one", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture()
def module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return load_model(MODEL_PY, monkeypatch, "onnx_runner_model_under_test")


def load(module: types.ModuleType, tmp_path: Path, **params: str) -> Any:
    version = tmp_path / "encoder" / "1"
    version.mkdir(parents=True)
    masked_mean_onnx(version / "model.onnx")
    config = {
        "name": "encoder",
        "backend": "python",
        "max_batch_size": 64,
        "input": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1], "allow_ragged_batch": True}
                  for n in ("input_ids", "attention_mask")],
        "output": [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [2]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {k: {"string_value": v} for k, v in {"intra_op_thread_count": "1", **params}.items()},
    }
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(version.parent),
                      "model_version": "1", "model_name": "encoder", "model_instance_kind": "CPU",
                      "model_instance_name": "encoder_0_0"})
    return model


def padded(rows: list[list[int]], width: int | None = None, left: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask): rows of token ids padded (right, or left) with 0 to ``width`` (default: the
    longest row)."""
    width = width or max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span], mask[i, span] = r, 1
    return ids, mask


def request(rows: list[list[int]], width: int | None = None, left: bool = False) -> Request:
    """One request: rows of token ids padded (right, or left) with 0 to ``width`` (default: its longest row)."""
    ids, mask = padded(rows, width, left)
    return Request(input_ids=ids, attention_mask=mask)


def outputs(responses: list[Any]) -> list[np.ndarray]:
    assert not any(r.has_error() for r in responses), [r.error().message() for r in responses if r.has_error()]
    return [r.output_tensors()[0].as_numpy() for r in responses]


def test_rows_run_sorted_by_length_in_the_planned_calls_and_come_back_in_order(module: Any, tmp_path: Path) -> None:
    # a call costs 1 ms plus 0.01 ms per padded token: fewest calls first, then least padding
    model = load(module, tmp_path, max_rows_per_call="2", call_cost="1,0.01,0")
    requests = [request([[5] * 7, [1, 2]], width=9), request([[3, 3, 3]]), request([[9] * 7, [4] * 6])]
    got = outputs(model.execute(requests))
    means = [[5.0, 1.5], [3.0], [9.0, 4.0]]
    for out, want in zip(got, means, strict=True):
        np.testing.assert_allclose(out[:, 0], want)
    # lengths 7, 2, 3, 7, 6 sorted longest first, at most 2 per call: three calls, and of those cuts (7 7) (6) (3 2)
    # pads least (26 tokens against 27 and 28); each call is padded to its own longest row only
    widths = {mean: width for out in got for mean, width in out}
    assert widths == {5.0: 7.0, 9.0: 7.0, 4.0: 6.0, 3.0: 3.0, 1.5: 3.0}


def test_a_cost_without_a_fixed_part_runs_each_length_alone(module: Any, tmp_path: Path) -> None:
    model = load(module, tmp_path, call_cost="0,1,0")
    got = outputs(model.execute([request([[1] * 5, [2] * 3, [3] * 5, [4] * 4])]))
    np.testing.assert_allclose(got[0], [[1, 5], [2, 3], [3, 5], [4, 4]])  # no row padded at all


@pytest.mark.parametrize("threads", ["1", "2"])
def test_one_single_thread_session_per_thread_and_a_call_for_each(module: Any, tmp_path: Path, threads: str) -> None:
    model = load(module, tmp_path, intra_op_thread_count=threads, call_cost="1,0.001,0")
    assert model.max_rows == 16 and len(model.sessions) == int(threads)
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in model.sessions)
    requests = [request([[n] * n for n in range(1 + i, 10 + i)]) for i in range(3)]
    got = outputs(model.execute(requests))
    for i, out in enumerate(got):
        np.testing.assert_allclose(out[:, 0], list(range(1 + i, 10 + i)))
    # 27 rows of lengths 1..11: two calls, the first as wide as the longest row; on one session because no call may
    # take more than 16 rows, on two because no call may take more than its share (14), so that both sessions work
    widths = {float(w) for out in got for w in out[:, 1]}
    assert len(widths) == 2 and max(widths) == 11.0
    rows_per_width = [sum(int((out[:, 1] == w).sum()) for out in got) for w in sorted(widths)]
    assert max(rows_per_width) <= (16 if threads == "1" else 14)


def test_the_call_cost_is_fitted_at_load_and_logged(module: Any, tmp_path: Path) -> None:
    model = load(module, tmp_path)
    cost = model.call_cost
    assert min(cost.fixed, cost.per_token, cost.per_token_width) >= 0 and cost(4, 32) > 0
    assert any(level == "info" and "call cost fitted at load" in text for level, text in module.pb_utils.Logger.lines)
    got = outputs(model.execute([request([[7] * 3, [8] * 9])]))
    np.testing.assert_allclose(got[0][:, 0], [7, 8])


def test_a_model_whose_calls_cannot_be_timed_keeps_the_default_cost_and_says_why(
    module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_sibling = module._load_sibling

    def sibling(name: str) -> Any:
        loaded = load_sibling(name)
        if name == "call_plan":
            def refuse(run: Any, repeats: int = 2) -> Any:
                raise RuntimeError("token_type_ids out of range")
            loaded.measure = refuse
        return loaded

    monkeypatch.setattr(module, "_load_sibling", sibling)
    model = load(module, tmp_path)
    assert model.call_cost == model._plan.DEFAULT
    assert any(level == "warn" and "could not time calls (token_type_ids out of range)" in text
               for level, text in module.pb_utils.Logger.lines)
    got = outputs(model.execute([request([[7] * 3, [8] * 9])]))
    np.testing.assert_allclose(got[0][:, 0], [7, 8])


@pytest.mark.parametrize("text", ["4,0.2", "a,b,c", "1,-1,0", "1,2,3,4", "nan,0,0"])
def test_a_bad_call_cost_is_refused_by_name(module: Any, tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueError, match="parameter call_cost must be three numbers >= 0"):
        load(module, tmp_path, call_cost=text)


def test_left_padded_rows_run_as_one_padded_call(module: Any, tmp_path: Path) -> None:
    """Cutting a row to its length would cut a left-padded row's tokens: such a batch keeps the padded path."""
    model = load(module, tmp_path, max_rows_per_call="1")
    got = outputs(model.execute([request([[2] * 5, [8]], left=True), request([[4, 4]])]))
    np.testing.assert_allclose(got[0], [[2.0, 5.0], [8.0, 5.0]])
    np.testing.assert_allclose(got[1], [[4.0, 5.0]])



def test_left_padded_batch_is_split_between_the_single_thread_sessions(module: Any, tmp_path: Path) -> None:
    """A batch that cannot be cut by length still uses every 1-thread session: its rows are split between them."""
    import threading

    model = load(module, tmp_path, intra_op_thread_count="2")
    assert len(model.sessions) == 2
    seen: dict[int, int] = {}
    lock = threading.Lock()
    for session in model.sessions:
        def counting_run(names: Any, feed: Any, _run: Any = session.run, _id: int = id(session)) -> Any:
            with lock:
                seen[_id] = seen.get(_id, 0) + next(iter(feed.values())).shape[0]
            return _run(names, feed)

        session.run = counting_run
    got = outputs(model.execute([request([[2] * 5, [8], [6, 6]], left=True), request([[4, 4]])]))
    np.testing.assert_allclose(got[0], [[2.0, 5.0], [8.0, 5.0], [6.0, 5.0]])
    np.testing.assert_allclose(got[1], [[4.0, 5.0]])
    assert sorted(seen.values()) == [2, 2]


def pair_scores_onnx(path: Path) -> None:
    """SCORES [rows, candidates] = mean of input_ids over the mask + 1000 x the call's sequence width: a per-pair
    score that padding does not change, and whose thousands show how wide the call that scored it was."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids_f", "mask_f"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis2"], ["total"], keepdims=0),
            helper.make_node("ReduceSum", ["mask_f", "axis2"], ["count"], keepdims=0),
            helper.make_node("Div", ["total", "count"], ["mean"]),
            helper.make_node("Shape", ["input_ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "two"], ["width_i"]),
            helper.make_node("Cast", ["width_i"], ["width"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["width", "thousand"], ["marker"]),
            helper.make_node("Add", ["mean", "marker"], ["SCORES"]),
        ],
        "pair_scores",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["rows", "candidates", "seq"])
         for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("SCORES", TensorProto.FLOAT, ["rows", "candidates"])],
        [
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
            helper.make_tensor("two", TensorProto.INT64, [], [2]),
            helper.make_tensor("thousand", TensorProto.FLOAT, [], [1000.0]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def load_cross_encoder(module: types.ModuleType, tmp_path: Path, **params: str) -> Any:
    """The runner as the reranker's config declares it (builders/cross_encoder.py): [candidates, sequence] inputs,
    SCORES [candidates] cut back to each request's candidates."""
    version = tmp_path / "reranker" / "1"
    version.mkdir(parents=True)
    pair_scores_onnx(version / "model.onnx")
    config = {
        "name": "reranker",
        "backend": "python",
        "max_batch_size": 16,
        "input": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1, -1], "allow_ragged_batch": True}
                  for n in ("input_ids", "attention_mask", "token_type_ids")],
        "output": [{"name": "SCORES", "data_type": "TYPE_FP32", "dims": [-1]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {k: {"string_value": v} for k, v in {"unpad_output_axes": "1", **params}.items()},
    }
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(version.parent),
                      "model_version": "1", "model_name": "reranker", "model_instance_kind": "CPU"})
    return model


def pairs_request(candidates: list[list[int]], width: int | None = None, left: bool = False) -> Request:
    """One query's candidates as the pair tokenizer sends them: [1, candidates, sequence], padded to ``width``."""
    ids, mask = padded(candidates, width, left)
    return Request(input_ids=ids[None], attention_mask=mask[None], token_type_ids=np.zeros_like(ids)[None])


def test_cross_encoder_pairs_run_sorted_by_length_across_requests_each_as_narrow_as_its_call(
    module: Any, tmp_path: Path
) -> None:
    model = load_cross_encoder(module, tmp_path, max_rows_per_call="2", call_cost="1,0.01,0",
                               intra_op_thread_count="2")
    assert model.pairs and model.regroup and len(model.sessions) == 2
    requests = [pairs_request([[5] * 7, [1, 2], [3] * 6], width=12), pairs_request([[9] * 7, [4]])]
    got = outputs(model.execute(requests))
    assert [g.shape for g in got] == [(1, 3), (1, 2)]  # each request its own candidates, no padded ones
    np.testing.assert_allclose(got[0] % 1000, [[5.0, 1.5, 3.0]])
    np.testing.assert_allclose(got[1] % 1000, [[9.0, 4.0]])
    # pairs of lengths 7, 7, 6, 2, 1 (both requests together), at most 2 per call: (7 7) (6) (2 1) pads least;
    # every call as wide as its own longest pair, never the 12 of the first request's padding
    np.testing.assert_allclose(got[0] // 1000, [[7, 2, 6]])
    np.testing.assert_allclose(got[1] // 1000, [[7, 2]])


def test_cross_encoder_pairs_scores_equal_the_padded_call(module: Any, tmp_path: Path) -> None:
    """The planned calls give every pair the score of the one padded call (the width marker aside)."""
    model = load_cross_encoder(module, tmp_path)
    rng = np.random.default_rng(0)
    requests = [pairs_request([list(rng.integers(1, 50, size=n)) for n in rng.integers(1, 30, size=c)])
                for c in (1, 5, 20)]
    planned = outputs(model.execute(requests))
    model.regroup = False  # the runner's padded path: one call for the whole batch
    padded = outputs(model.execute(requests))
    for p, q in zip(planned, padded, strict=True):
        np.testing.assert_allclose(p % 1000, q % 1000, rtol=1e-6)
    widest = max(r.inputs()[0].as_numpy().shape[2] for r in requests)
    assert {int(v) for v in padded[0].ravel() // 1000} == {widest}  # the padded call: as wide as the widest


def test_left_padded_cross_encoder_pairs_keep_the_padded_call(module: Any, tmp_path: Path) -> None:
    model = load_cross_encoder(module, tmp_path, max_rows_per_call="1")
    got = outputs(model.execute([pairs_request([[2] * 5, [8]], left=True), pairs_request([[4, 4]])]))
    np.testing.assert_allclose(got[0], [[5002.0, 5008.0]])
    np.testing.assert_allclose(got[1], [[5004.0]])


def test_a_bad_request_fails_alone(module: Any, tmp_path: Path) -> None:
    model = load(module, tmp_path)
    bad = Request(input_ids=np.zeros((2, 3), np.int64))  # no attention_mask
    responses = model.execute([request([[1, 2]]), bad, request([[7]])])
    assert responses[1].has_error() and "missing input 'attention_mask'" in responses[1].error().message()
    np.testing.assert_allclose(responses[0].output_tensors()[0].as_numpy()[:, 0], [1.5])
    np.testing.assert_allclose(responses[2].output_tensors()[0].as_numpy()[:, 0], [7.0])


def test_token_batches_onnx_runtime_would_take_silently_are_refused_alone(module: Any, tmp_path: Path) -> None:
    """A negative token id (ONNX Runtime's Gather wraps it), a mask of 2, and rows of no tokens (an all-zero
    embedding) were answered as if valid (robustness audit): each is that request's INVALID_ARG."""
    model = load(module, tmp_path)
    ids, mask = padded([[1, 2]])
    cases = {
        "a negative token id (-5)": Request(input_ids=np.array([[1, -5]], np.int64), attention_mask=mask),
        "values other than 0 and 1": Request(input_ids=ids, attention_mask=np.array([[1, 2]], np.int64)),
        "hold no tokens": Request(input_ids=np.zeros((1, 0), np.int64), attention_mask=np.zeros((1, 0), np.int64)),
    }
    responses = model.execute([request([[1, 2]]), *cases.values(), request([[7]])])
    for says, response in zip(cases, responses[1:-1], strict=True):
        assert response.has_error() and says in response.error().message(), says
    np.testing.assert_allclose(responses[0].output_tensors()[0].as_numpy()[:, 0], [1.5])
    np.testing.assert_allclose(responses[-1].output_tensors()[0].as_numpy()[:, 0], [7.0])


def test_an_unknown_engine_is_refused_by_name(module: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parameter engine must be 'onnxruntime' or 'torch', got 'tensorrt'"):
        load(module, tmp_path, engine="tensorrt")


def test_the_torch_engine_loads_without_onnxruntime_and_embeds_like_the_onnx_export(
    module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The -trtllm-python-py3 images have torch and transformers but no onnxruntime: with engine torch the runner
    must not import it. Same embeddings as the tiny checkpoint's ONNX export (mean pooling, L2 norm)."""
    import shutil

    import onnxruntime

    from tritonforge.builders.checkpoints import model_files, resolve_checkpoint
    from tritonforge.builders.onnx_encoder import export_encoder

    checkpoint = resolve_checkpoint("random:bert")
    artifact = export_encoder(checkpoint, pooling="mean", normalize=True)
    version = tmp_path / "encoder" / "1"
    for rel, path in model_files(checkpoint).items():
        (version / "checkpoint").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, version / "checkpoint" / rel)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    config = _torch_config(artifact, precision="fp16")  # fp16 is float32 on a CPU instance
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(version.parent),
                      "model_version": "1", "model_name": "encoder", "model_instance_kind": "CPU"})
    feeds = []
    for row in ([2, 7, 9, 3], [2, 5, 3], [2, 11, 12, 13, 14, 3]):  # one request each, batched together
        ids = np.array([row], np.int64)
        arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feeds.append({n: arrays[n] for n in artifact.input_names})
    got = outputs(model.execute([Request(**f) for f in feeds]))
    monkeypatch.delitem(sys.modules, "onnxruntime")
    session = onnxruntime.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    for feed, out in zip(feeds, got, strict=True):
        np.testing.assert_allclose(out, session.run(None, feed)[0], atol=1e-4)


def test_the_torch_scoring_engine_runs_at_most_max_rows_per_call_pairs_per_forward() -> None:
    """A large rerank batch on the torch engine (gpu images) goes through the model in slices of pairs, bounding its
    activations; the scores equal one forward over every pair."""
    import importlib.util

    from tritonforge.builders.checkpoints import resolve_checkpoint

    spec = importlib.util.spec_from_file_location("torch_engine_under_test", MODEL_PY.parent / "torch_engine.py")
    assert spec is not None and spec.loader is not None
    engine_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(engine_module)
    checkpoint = str(resolve_checkpoint("random:cross-encoder"))
    sliced = engine_module.TorchEncoder(checkpoint, {"task": "scoring", "max_rows_per_call": "3"}, "cpu")
    whole = engine_module.TorchEncoder(checkpoint, {"task": "scoring", "max_rows_per_call": "1000"}, "cpu")
    assert engine_module.TorchEncoder(checkpoint, {"task": "scoring"}, "cpu").pairs_per_call == 64
    seen: list[int] = []
    forward = sliced.model.forward
    sliced.model.forward = lambda **kw: (seen.append(int(kw["input_ids"].shape[0])), forward(**kw))[1]
    rng = np.random.default_rng(3)
    ids = rng.integers(5, 90, size=(2, 4, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[:, :, 6:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    got = sliced.run(["SCORES"], feed)[0]
    assert got.shape == (2, 4) and seen == [3, 3, 2]
    np.testing.assert_allclose(got, whole.run(["SCORES"], feed)[0], atol=1e-5)


def test_cpu_affinity_places_each_instance_on_cores_of_its_own() -> None:
    from tritonforge.python_backends import load_module

    affinity: Any = load_module("onnx_runner", "affinity")
    assert affinity.instance_index("minilm_encoder_0_1", [{"count": 2}]) == 1
    assert affinity.instance_index("my_model_1_0", [{"count": 2}, {"count": 3}]) == 2  # after group 0's two
    assert affinity.instance_index("m_0_0", []) == 0
    assert [affinity.cores_for(k, 1, {0, 1}) for k in range(3)] == [[0], [1], [0]]  # wraps round
    assert affinity.cores_for(1, 2, {0, 1, 2, 3}) == [2, 3]
    assert affinity.cores_for(1, 1, {4, 6}) == [6]  # a container's cpuset, not 0..n-1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux scheduler affinity")
def test_cpu_affinity_instance_pins_the_stub_and_a_bad_value_is_refused(
    module: types.ModuleType, tmp_path: Path
) -> None:
    before = os.sched_getaffinity(0)
    try:
        model = load(module, tmp_path / "pinned", cpu_affinity="instance")
        assert model.cores == [min(before)]
        assert os.sched_getaffinity(0) == {min(before)}
        ids, mask = padded([[5, 6, 7], [8]])
        assert outputs(model.execute([Request(input_ids=ids, attention_mask=mask)]))[0].shape == (2, 2)
    finally:
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), before)
    assert load(module, tmp_path / "default").cores is None
    with pytest.raises(ValueError, match="cpu_affinity must be 'none' or 'instance', got 'core'"):
        load(module, tmp_path / "bad", cpu_affinity="core")


def test_available_cores_follow_the_affinity_set_and_a_cgroup_quota(tmp_path: Path) -> None:
    from tritonforge.python_backends import load_module

    affinity: Any = load_module("onnx_runner", "cores")
    allowed = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert affinity.available_cores(str(tmp_path / "none")) == allowed  # no cgroup v2 file
    cpu_max.write_text("max 100000\n")  # no quota
    assert affinity.available_cores(str(cpu_max)) == allowed
    cpu_max.write_text("50000 100000\n")  # half a core: one
    assert affinity.available_cores(str(cpu_max)) == 1
    cpu_max.write_text(f"{150000 * allowed} 100000\n")  # a quota above the cpuset: the cpuset
    assert affinity.available_cores(str(cpu_max)) == allowed
    cpu_max.write_text("garbage\n")
    assert affinity.available_cores(str(cpu_max)) == allowed


def _torch_engine_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_engine_under_test", MODEL_PY.parent / "torch_engine.py")
    assert spec is not None and spec.loader is not None
    engine_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(engine_module)
    return engine_module


def test_the_torch_engine_in_bf16_embeds_like_fp32_and_refuses_an_unknown_precision(minilm_checkpoint: Path) -> None:
    """`precision: bf16` (the cpu target's cpu_quantization bf16): bfloat16 weights on CPU, float32 outputs within
    cosine 0.999 of fp32's on real sentences (all-MiniLM-L6-v2)."""
    import torch
    from tokenizers import Tokenizer

    engine_module = _torch_engine_module()
    checkpoint = str(minilm_checkpoint)
    params = {"task": "embedding", "pooling": "mean", "normalize": "true"}
    fp32 = engine_module.TorchEncoder(checkpoint, params, "cpu")
    bf16 = engine_module.TorchEncoder(checkpoint, {**params, "precision": "bf16"}, "cpu")
    assert (fp32.precision, fp32.dtype) == ("fp32", torch.float32)
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    # fp16 stays float32 on CPU (half is slow there); bf16 is the CPU's reduced precision
    assert engine_module.TorchEncoder(checkpoint, {**params, "precision": "fp16"}, "cpu").dtype == torch.float32
    tokenizer = Tokenizer.from_file(str(minilm_checkpoint / "tokenizer.json"))
    tokenizer.enable_padding()
    sentences = ["Hi.", "Where is the nearest train station?",
                 "The committee postponed its decision until the auditors had reviewed every invoice from last year.",
                 "Quantum computers use qubits, which can represent both zero and one at the same time."]
    encodings = tokenizer.encode_batch(sentences)
    feed = {"input_ids": np.array([e.ids for e in encodings], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], np.int64)}
    (want,) = fp32.run(["EMBEDDING"], feed)
    (got,) = bf16.run(["EMBEDDING"], feed)
    assert got.dtype == np.float32 and got.shape == want.shape
    cosines = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosines.min() >= 0.999, cosines
    with pytest.raises(ValueError, match="parameter precision must be one of fp32, fp16, bf16, got 'int8'"):
        engine_module.TorchEncoder(checkpoint, {**params, "precision": "int8"}, "cpu")


def _torch_encoder_dir(tmp_path: Path) -> tuple[Path, Any]:
    """A version folder with the tiny random BERT's checkpoint (what a torch-engine build ships), and its export."""
    import shutil

    from tritonforge.builders.checkpoints import model_files, resolve_checkpoint
    from tritonforge.builders.onnx_encoder import export_encoder

    checkpoint = resolve_checkpoint("random:bert")
    artifact = export_encoder(checkpoint, pooling="mean", normalize=True)
    version = tmp_path / "encoder" / "1"
    (version / "checkpoint").mkdir(parents=True)
    for rel, path in model_files(checkpoint).items():
        shutil.copy(path, version / "checkpoint" / rel)
    return version, artifact


def _torch_config(artifact: Any, **params: str) -> dict[str, Any]:
    return {
        "name": "encoder", "backend": "python", "max_batch_size": 64,
        "input": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1], "allow_ragged_batch": True}
                  for n in artifact.input_names],
        "output": [{"name": artifact.output_name, "data_type": "TYPE_FP32", "dims": [artifact.dim]}],
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {k: {"string_value": v} for k, v in
                       {"engine": "torch", "task": "embedding", "pooling": "mean", "normalize": "true",
                        "intra_op_thread_count": "1", **params}.items()},
    }


def test_the_torch_engine_on_a_cpu_instance_runs_rows_sorted_by_length_with_the_instance_threads(
    module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU instance the torch engine (cpu target, bf16) takes the ONNX Runtime path's regrouped calls: the
    batch's rows sorted by length, each call as wide as its longest row; torch runs the instance's threads and the
    log names engine, precision and threads. Results equal the ONNX export's."""
    import onnxruntime
    import torch

    version, artifact = _torch_encoder_dir(tmp_path)
    threads_before = torch.get_num_threads()
    pinning = {"cpu_affinity": "instance"} if hasattr(os, "sched_setaffinity") else {}
    affinity_before = os.sched_getaffinity(0) if pinning else set()
    model = module.TritonPythonModel()
    try:
        model.initialize({"model_config": json.dumps(_torch_config(artifact, call_cost="0,1,0", **pinning)),
                          "model_repository": str(version.parent), "model_version": "1", "model_name": "encoder",
                          "model_instance_kind": "CPU", "model_instance_name": "encoder_0_0"})
        assert model.regroup and torch.get_num_threads() == 1
        assert model.cores == ([min(affinity_before)] if pinning else None)  # pinned as the ONNX Runtime path pins
        assert any("loaded engine torch on cpu, precision fp32" in text and "1 intra-op threads" in text
                   for _level, text in module.pb_utils.Logger.lines)
        widths: list[int] = []
        run = model.session.run
        monkeypatch.setattr(model.session, "run",
                            lambda names, feed: (widths.append(feed["input_ids"].shape[1]), run(names, feed))[1])
        rows = ([2, 7, 9, 3], [2, 5, 3], [2, 11, 12, 13, 14, 15, 16, 17, 18, 3], [2, 6, 3])
        feeds = []
        for row in rows:  # one request each, batched together
            ids = np.array([row], np.int64)
            arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            feeds.append({n: arrays[n] for n in artifact.input_names})
        got = outputs(model.execute([Request(**f) for f in feeds]))
    finally:
        torch.set_num_threads(threads_before)
        for task in os.listdir("/proc/self/task") if pinning else ():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), affinity_before)
    assert widths == [10, 4, 3]  # not one padded call: sorted by length, each call as wide as its rows
    session = onnxruntime.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    for feed, out in zip(feeds, got, strict=True):
        np.testing.assert_allclose(out, session.run(None, feed)[0], atol=1e-4)


def test_the_torch_engine_on_a_gpu_instance_keeps_one_padded_call(module: Any, tmp_path: Path) -> None:
    """KIND_GPU keeps one padded call per batch (the shape a GPU wants); CUDA is faked by running on the CPU."""
    version, artifact = _torch_encoder_dir(tmp_path)
    engine_module = _load_engine_for_fake_gpu(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(_torch_config(artifact)), "model_repository": str(version.parent),
                      "model_version": "1", "model_name": "encoder", "model_instance_kind": "GPU",
                      "model_instance_device_id": "0", "model_instance_name": "encoder_0_0"})
    assert not model.regroup and engine_module.devices == ["cuda:0"]


def _load_engine_for_fake_gpu(module: Any) -> Any:
    """Make the runner's `torch_engine.TorchEncoder` record the device asked for and run on the CPU."""
    engine_module = _torch_engine_module()
    real = engine_module.TorchEncoder
    engine_module.devices = []

    def encoder(checkpoint: str, params: dict[str, str], device: str) -> Any:
        engine_module.devices.append(device)
        return real(checkpoint, params, "cpu")

    engine_module.TorchEncoder = encoder
    loader = module._load_sibling
    module._load_sibling = lambda name: engine_module if name == "torch_engine" else loader(name)
    return engine_module
