"""Prepared requests for load generation: one worker's own connection with its tensors built once, sending
requests (or decoupled streams) and timing each; errors are recorded, never raised (the bench reports them).

Part of the access layer (the bench's load generators use it; only this package imports tritonclient).
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonforge.triton.blocking_http import BlockingHttpTransport
from tritonforge.triton.errors import short_message
from tritonforge.triton.options import ClientOptions, Protocol, RetryPolicy, grpc_client_kwargs


@dataclass
class Sample:
    start: float  # when it was due (open loop) or sent (closed loop)
    end: float
    ok: bool
    error: str = ""
    token_times: list[float] = field(default_factory=list)


class LoadSession:
    """One worker's own client and connection (and gRPC stream for decoupled models)."""

    def __init__(
        self,
        address: str,
        protocol: Protocol,
        model: str,
        payloads: Sequence[Mapping[str, np.ndarray]],
        datatypes: Mapping[str, str],
        outputs: Sequence[str],
        timeout: float,
        streaming: bool,
    ) -> None:
        self.protocol = protocol
        self.model = model
        self.timeout = timeout
        self.streaming = streaming
        # the connection's own options: no retries (a failure is a measured error), a short reconnect backoff
        options = ClientOptions(timeout=timeout, retry=RetryPolicy(retries=0, backoff=0.1, max_backoff=1.0))
        if protocol == "grpc":
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(**grpc_client_kwargs(address, options))
        else:
            import tritonclient.http as mod  # type: ignore[no-redef]  # grpc is typed (typings/), http is not

            self.client = BlockingHttpTransport.for_url(f"http://{address}", context=None)
        self.requests = []
        for payload in payloads:
            tensors = []
            for name, array in payload.items():
                tensor = mod.InferInput(name, list(array.shape), datatypes[name])
                if protocol == "http":
                    tensor.set_data_from_numpy(array, binary_data=True)
                else:
                    tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            self.requests.append(tensors)
        if protocol == "http":
            self.outputs = [mod.InferRequestedOutput(o, binary_data=True) for o in outputs]
        else:
            self.outputs = [mod.InferRequestedOutput(o) for o in outputs]
        self._stream: queue.Queue[tuple[Any, Any]] | None = None
        self._sent = 0

    def send(self, index: int, due: float | None = None) -> Sample:
        tensors = self.requests[index % len(self.requests)]
        start = time.perf_counter()
        if self.streaming:
            return self._send_stream(tensors, start if due is None else due)
        try:
            self.client.infer(self.model, tensors, outputs=self.outputs, client_timeout=self.timeout)
        except Exception as err:
            return Sample(start if due is None else due, time.perf_counter(), False, short_message(err))
        return Sample(start if due is None else due, time.perf_counter(), True)

    def _open_stream(self) -> queue.Queue[tuple[Any, Any]]:
        if self._stream is None:
            responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
            self.client.start_stream(callback=lambda result, error: responses.put((result, error)))
            self._stream = responses
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream = None
            with contextlib.suppress(Exception):
                self.client.stop_stream(cancel_requests=True)

    def _send_stream(self, tensors: list[Any], start: float) -> Sample:
        self._sent += 1
        request_id = str(self._sent)
        try:
            responses = self._open_stream()
            self.client.async_stream_infer(
                self.model, tensors, outputs=self.outputs, request_id=request_id, enable_empty_final_response=True
            )
        except Exception as err:
            self._close_stream()
            return Sample(start, time.perf_counter(), False, short_message(err))
        deadline = time.perf_counter() + self.timeout
        tokens: list[float] = []
        while True:
            left = deadline - time.perf_counter()
            try:
                result, error = responses.get(timeout=max(left, 0.0))
            except queue.Empty:
                self._close_stream()  # drop what may still arrive for this request
                return Sample(start, time.perf_counter(), False, f"no final response within {self.timeout:g}s", tokens)
            now = time.perf_counter()
            if error is not None:
                self._close_stream()
                return Sample(start, now, False, short_message(error), tokens)
            response = result.get_response()
            if response.id != request_id:
                continue  # a late response of an earlier (timed out) request
            if response.outputs:
                tokens.append(now)
            final = response.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                return Sample(start, now, True, "", tokens)

    def close(self) -> None:
        self._close_stream()
        with contextlib.suppress(Exception):
            self.client.close()
