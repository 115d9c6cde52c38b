"""Triton python-backend model: runs `model.onnx` with ONNX Runtime on CPU (tritonforge, `cpu` target).

The `gpu` target serves the same `model.onnx` with Triton's onnxruntime backend; this runner keeps the same
tensor names, dtypes and parameters (`intra_op_thread_count`, `inter_op_thread_count`) so the ensemble above it
does not change between targets.

Inputs are declared `allow_ragged_batch`, so the dynamic batcher may group requests whose sequence lengths
differ; they are right-padded here to one length and run as ONE session call (padding is masked by
attention_mask, so results do not depend on the batch they were served in).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"])) for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        instances = sum(max(1, int(g.get("count", 1))) for g in config.get("instance_group", [])) or 1

        options = ort.SessionOptions()
        # Split the machine's cores between this model's instances instead of letting each take all of them.
        intra = int(params.get("intra_op_thread_count") or 0)
        options.intra_op_num_threads = intra if intra > 0 else max(1, (os.cpu_count() or 1) // instances)
        options.inter_op_num_threads = int(params.get("inter_op_thread_count") or 1)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    def _read(self, request):
        arrays = {}
        for name, dtype in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return None, f"missing input '{name}'"
            array = tensor.as_numpy()
            if array.ndim != 2 or array.shape[0] == 0:
                return None, f"input '{name}' must have shape [batch, sequence], got {list(array.shape)}"
            arrays[name] = array.astype(dtype, copy=False)
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1:
            return None, f"inputs must share one shape, got {sorted(shapes)}"
        return arrays, None

    def execute(self, requests):
        read = [self._read(r) for r in requests]
        good = [a for a, err in read if a is not None]
        try:
            results = iter(self._run(good) if good else [])
        except Exception:
            # one bad request (e.g. token ids out of the vocabulary) must not fail its neighbours: retry alone
            results = iter([self._run_alone(a) for a in good])
        responses = []
        for _arrays, error in read:
            outs = error or next(results)
            if isinstance(outs, str):
                err = pb_utils.TritonError(outs, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=err))
            else:
                tensors = [pb_utils.Tensor(name, outs[name]) for name in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def _run_alone(self, arrays):
        try:
            return self._run([arrays])[0]
        except Exception as err:
            return f"ONNX Runtime failed on this request: {err}"

    def _run(self, batch):
        width = max(next(iter(a.values())).shape[1] for a in batch)
        feed = {}
        for name, _ in self.inputs:
            parts = [np.pad(a[name], ((0, 0), (0, width - a[name].shape[1]))) for a in batch]
            feed[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        values = self.session.run(self.outputs, feed)
        out, start = [], 0
        for a in batch:
            n = next(iter(a.values())).shape[0]
            pairs = zip(self.outputs, values, strict=True)
            out.append({name: np.ascontiguousarray(v[start : start + n]) for name, v in pairs})
            start += n
        return out
