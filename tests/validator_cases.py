"""Repositories the validator must judge as Triton 2.51 does: read by tests/unit/test_validator.py and loaded on a
real Triton by tests/integration/test_validator_vs_triton.py."""

from __future__ import annotations

from pathlib import Path

WARMUP_REQUEST_CASES = {
    # name: (max_batch_size, extra inputs, warmup batch_size, warmup inputs, Triton 2.51's refusal)
    "bigbatch": (2, "", 8, 'key: "IN" value: { data_type: TYPE_FP32 dims: [4] zero_data: true }',
                 "failed to run warmup sample 'w': batch size 8 for 'bigbatch_0', max allowed is 2"),
    "nobatch": (0, "", 2, 'key: "IN" value: { data_type: TYPE_FP32 dims: [4] zero_data: true }',
                "failed to run warmup sample 'w': batch size 2 for 'nobatch_0', max allowed is 0"),
    "dtype": (2, "", 1, 'key: "IN" value: { data_type: TYPE_INT32 dims: [4] zero_data: true }',
              "[request id: <id_unknown>] inference input 'IN' data-type is 'INT32', but model 'dtype' expects 'FP32'"),
    "shape": (0, "", 1, 'key: "IN" value: { data_type: TYPE_FP32 dims: [7] zero_data: true }',
              "[request id: <id_unknown>] unexpected shape for input 'IN' for model 'shape'. Expected [4], got [7]."),
    "nodims": (0, "", 1, 'key: "IN" value: { data_type: TYPE_FP32 zero_data: true }',
               "[request id: <id_unknown>] unexpected shape for input 'IN' for model 'nodims'. Expected [4], got []."),
    "batchedshape": (2, "", 1, 'key: "IN" value: { data_type: TYPE_FP32 dims: [7] zero_data: true }',
                     "[request id: <id_unknown>] unexpected shape for input 'IN' for model 'batchedshape'. Expected "
                     "[-1,4], got [1,7]. NOTE: Setting a non-zero max_batch_size in the model config requires a batch "
                     "dimension to be prepended to each input shape. If you want to specify the full shape including "
                     "the batch dim in your input dims config, try setting max_batch_size to zero. See the model "
                     "configuration docs for more info on max_batch_size."),
    "missing": (2, 'input { name: "IN2" data_type: TYPE_FP32 dims: [4] }\n', 1,
                'key: "IN" value: { data_type: TYPE_FP32 dims: [4] zero_data: true }',
                "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'missing'. Got input(s) "
                "['IN'], but missing required input(s) ['IN2']. Please provide all required input(s)."),
}


ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN")
                                                            .as_numpy())]) for r in requests]
"""


def warmup_request_repo(repo: Path) -> Path:
    """One python model (an echo) per case of WARMUP_REQUEST_CASES."""
    for name, (mbs, extra, batch, inputs, _message) in WARMUP_REQUEST_CASES.items():
        config = (
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: {mbs}\n'
            'input { name: "IN" data_type: TYPE_FP32 dims: [4] }\n' + extra
            + 'output { name: "OUT" data_type: TYPE_FP32 dims: [4] }\n'
            + f'model_warmup {{ name: "w" batch_size: {batch} inputs {{ {inputs} }} }}\n'
        )
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(config)
        (repo / name / "1" / "model.py").write_text(ECHO_MODEL)
    return repo
