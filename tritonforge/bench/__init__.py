"""Benchmark a model on a running Triton: closed-loop concurrency sweeps or an open-loop request rate.

    from tritonforge.bench import run_bench

    report = run_bench("127.0.0.1:8001", "embed", concurrency=[1, 4, 16], duration_s=5)
    report.write_json("bench.json")
    report.plot("bench.png")

What it measures, per level (one concurrency, or the offered rate):

* client side: latency percentiles (p50/p90/p95/p99, mean, min, max, in ms), throughput (requests/s and items/s:
  requests x batch size), error counts with their messages;
* server side, from Triton's statistics API (``get_inference_statistics``) read before and after the level: the
  average queue, compute_input, compute_infer and compute_output time per request (µs), the average total time in
  the server, the executions (so the dynamic batcher's average batch size), for the model *and* for every composing
  model of an ensemble (recursively). An ensemble's own queue/compute figures are what Triton reports for the
  ensemble scheduler; its composing models' rows show where the time goes;
* decoupled (streaming) models, over gRPC streams: time to first response, inter-response latency, responses per
  request and responses ("tokens") per second.

Load generation: ``concurrency=[N, ...]`` runs N workers, each with its own client and connection, each sending
its next request as soon as the previous one returns (closed loop). ``rate=R`` sends requests at Poisson arrival
times averaging R per second (open loop) through a bounded pool of ``max_inflight`` workers; an open-loop latency
is measured from the request's *scheduled* arrival, so a client that falls behind shows it (``late``) instead of
hiding it, and arrivals still unsent when the level's time is up are counted as ``dropped``; a rate and duration
of more than ``MAX_OPEN_LOOP_REQUESTS`` arrivals are refused (unless ``max_requests`` bounds the level). Each level
first runs ``warmup_s`` seconds unmeasured, then ``duration_s`` measured (or until ``max_requests``). A closed-loop
worker whose request failed to connect (the server gone) waits before its next one, 50 ms doubling to 1 s.

Failures and interruptions: each level reports its ``error_rate`` (the command line fails above
``--max-error-rate``); when Triton counted more (or fewer) successful requests of the model than the client did, the
level's ``server_mismatch`` says so (another client's traffic is in the split). Setting ``stop`` (the command line
does on Ctrl-C and SIGTERM) ends the run after the requests in flight, with the levels completed and
``interrupted`` set.

Inputs: ``"auto"`` generates them from the model's config (shapes with -1 become ``seq_length``; STRING inputs get
real short English sentences; integers and floats are random within a safe range, with name-based choices for the
usual controls: ``*mask*`` ones, ``max_tokens`` 16, ``top_k`` 5, ``temperature`` 1.0, ...); optional inputs are
left out. Or a JSON data file (perf_analyzer's layout)::

    {"data": [{"TEXT": ["a sentence"]}, {"TEXT": {"content": ["another"], "shape": [1]}}, ...]}

one entry per batch item, shapes without the batch dimension; ``batch_size`` consecutive entries make a request.
A STRING value may also be ``{"b64": "..."}`` (raw bytes).

Which tool measures what: this one measures Triton models as Triton sees them (any model or ensemble, gRPC or HTTP,
with the server-side split per composing model). OpenAI-protocol endpoints (tritonforge's gateway, or any other) and
LLM serving metrics by concurrency (time to first token, inter-token latency, output tokens/s, with the checkpoint's
tokenizer) are NVIDIA's ``aiperf``'s job; it also reaches Triton's ``generate_stream`` through its ``template``
endpoint type. ``tests/bench/test_aiperf_gateway.py`` runs it against both front doors; it is not re-implemented here.

A benchmark sends real load. It refuses any address that is not loopback (127.0.0.0/8, ::1, a name that resolves
only to those) unless ``allow_remote=True`` (``tritonforge bench --allow-remote``): point it only at a server you
are allowed to load, and bound it (``duration_s``, ``max_requests``, ``timeout``).

The package: :mod:`.target` (where, how many), :mod:`.inputs` (payloads), :mod:`.loadgen` (closed and open loop over
the access layer's :class:`~tritonforge.triton.load.LoadSession`), :mod:`.stats` (Triton's statistics), :mod:`.run`
(a run), :mod:`.results` and :mod:`.report` (what it reports and how it is shown).
"""

from tritonforge.bench.inputs import SENTENCES, generate_inputs, load_data
from tritonforge.bench.report import error_lines, plot_report, report_tables
from tritonforge.bench.results import BenchReport, LevelResult, ModelSplit, Percentiles, StreamStats
from tritonforge.bench.run import run_bench
from tritonforge.bench.target import check_target, default_url, parse_concurrency
from tritonforge.errors import BenchError, BenchOptionsError

__all__ = [
    "SENTENCES",
    "BenchError",
    "BenchOptionsError",
    "BenchReport",
    "LevelResult",
    "ModelSplit",
    "Percentiles",
    "StreamStats",
    "check_target",
    "default_url",
    "error_lines",
    "generate_inputs",
    "load_data",
    "parse_concurrency",
    "plot_report",
    "report_tables",
    "run_bench",
]
