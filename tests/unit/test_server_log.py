"""What a failed start quotes from tritonserver's log (tritonforge/server_process.py)."""

from __future__ import annotations

from tritonforge.server_process import log_excerpt, reason_from_log

LOG = """\
W1205 20:35:12.719029 24974 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory, pinned memory pool will not be available: CUDA driver version is insufficient for CUDA runtime version"
I1205 20:35:12.719090 24974 cuda_memory_manager.cc:117] "CUDA memory pool disabled"
E1205 20:35:12.719169 24974 server.cc:241] "CudaDriverHelper has not been initialized."
I1205 20:35:12.726939 24974 model_lifecycle.cc:472] "loading: m:1"
I1205 20:35:12.864542 24984 pb_stub.cc:366]  Failed to initialize Python stub: ModuleNotFoundError: No module named 'x'
I1205 20:35:13.212151 24974 model_lifecycle.cc:777] "failed to load 'm'"
I1205 20:35:13.212231 24974 server.cc:604]{space}
+------------------+------+
| Backend          | Path |
+------------------+------+
I1205 20:35:13.212437 24974 metrics.cc:770] "Collecting CPU metrics"
E1205 20:35:13.212561 24974 tritonserver.cc:2607] "Internal: failed to load all models"
""".format(space=" ")  # the table's first line ends in a space


def test_a_cpu_host_excerpt_leaves_out_what_every_start_prints_there() -> None:
    lines = log_excerpt(LOG, gpu_host=False).splitlines()
    assert [ln.split("] ", 1)[1] for ln in lines] == [
        '"loading: m:1"',
        " Failed to initialize Python stub: ModuleNotFoundError: No module named 'x'",
        "\"failed to load 'm'\"",
        '"Internal: failed to load all models"',
    ]
    on_gpu_host = log_excerpt(LOG, gpu_host=True)  # there the CUDA lines may be the cause: kept
    assert "CUDA driver version is insufficient" in on_gpu_host and "CudaDriverHelper" in on_gpu_host
    assert "server.cc:604]" not in on_gpu_host and "| Backend" not in on_gpu_host
    assert reason_from_log("m", LOG) == "failed to load 'm'"
