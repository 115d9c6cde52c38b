"""The command line: a thin map from arguments onto library calls (see tritonforge/__init__.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from tritonforge.cli_deploy import RateLimitOpt, RateLimitResourceOpt, deploy_app, push
from tritonforge.cli_gateway import (
    AdminKeysFileOpt,
    ApiKeysFileOpt,
    CorsOriginOpt,
    GatewayModelOpt,
    InsecureOpt,
    KeepAliveOpt,
    LogLevelOpt,
    MaxInFlightOpt,
    MaxPerKeyOpt,
    SplitsOpt,
    configure_logging,
    prepare_gateway,
)
from tritonforge.cli_output import console, err_console, missing_extra, styled
from tritonforge.cli_output import fail as _fail
from tritonforge.cli_paths import path_arg
from tritonforge.cli_release import release_app
from tritonforge.errors import TritonForgeError
from tritonforge.stop_signals import STOP_SIGNALS, StopOnSignals, exit_code, not_ignored

DEFAULT_GATEWAY_PORT = 9000  # `gateway --port` and `serve --gateway-port`

# help as click writes it: Rich's option tables cut option names and help text at 80 columns (--no-auto-compl…)
app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Build, validate, serve and call Triton model repositories.",
    rich_markup_mode=None,
)
TargetOpt = Annotated[str | None, typer.Option("--target", help="cpu or gpu (default: the spec's)")]


def _print_version(value: bool) -> None:
    if value:
        import tritonforge

        console.print(f"tritonforge {tritonforge.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="print tritonforge's version and exit"
    )] = False,
) -> None:
    """Build, validate, serve and call Triton model repositories."""


def _output_file(path: Path | None, option: str, suffix: str | None = None) -> None:
    """Refuse an output file that cannot be written before the work that produces it (a benchmark, a question set)
    runs: its results would be lost."""
    if path is None:
        return
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give a file path", param_hint=option)
    if suffix is not None and path.suffix.lower() != suffix:
        raise typer.BadParameter(f"{path}: give a {suffix} file name", param_hint=option)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    folder = existing if existing != path.absolute() else existing.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise typer.BadParameter(f"{path} cannot be written ({folder} is not a writable folder)", param_hint=option)


def _target(value: str | None) -> Literal["cpu", "gpu"] | None:
    if value not in (None, "cpu", "gpu"):
        raise typer.BadParameter(f"'{value}' is not a target; choose cpu or gpu", param_hint="--target")
    return value  # type: ignore[return-value]


def _random_stand_ins(repo: object) -> list[str]:
    """What a built repository serves from random weights (its tritonforge.json), to say so when serving it."""
    from tritonforge.build_manifest import read_build_manifest

    found = (read_build_manifest(str(repo)) or {}).get("random_stand_ins")
    return [str(s) for s in found] if isinstance(found, list) else []


@app.command()
def build(
    spec: Annotated[Path, typer.Argument(help="deployment spec (YAML)", parser=path_arg)],
    out: Annotated[Path, typer.Option("-o", "--out", help="model repository folder to write", parser=path_arg)],
    target: TargetOpt = None,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="gpu: select the TensorRT engine path and write the repository with a build_engines.sh to run on "
            "a GPU machine instead of building engines here (cpu: list the models, write nothing)",
        ),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(help="gpu: the serving image, nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3 (overrides "
                     "the spec's; it decides which LLM runtimes can be served)"),
    ] = None,
) -> None:
    """Build artifacts, render every config, write the repository and validate it."""
    from tritonforge.build import build as build_repo

    try:
        with err_console.status("building…") as status:
            report = build_repo(
                spec, out, target=_target(target), progress=lambda m: status.update(m), plan_only=plan, image=image
            )
    except TritonForgeError as err:
        _fail(err)
    if plan:
        console.print(styled("bold", "plan", f" ({report.target} target): Triton models " + ", ".join(report.models)))
        for note in report.notes:
            console.print(f"  note: {note}")
        for command in report.planned_commands:
            print(command)  # plain: copy-pasteable
        return
    from rich.table import Table

    table = Table(title=f"{report.repo} ({report.target} target, {report.seconds:.1f} s)")
    for col in ("model", "artifact", "precision", "parity max |Δ|", "vs fp32 (quantization gate)"):
        table.add_column(col)
    for a in report.artifacts:
        table.add_row(
            a.model,
            a.kind,
            a.precision,
            "-" if a.parity_max_abs_diff is None else f"{a.parity_max_abs_diff:.2e}",
            _versus_fp32(a),
        )
    console.print(table)
    console.print("Triton models: " + ", ".join(report.models))
    for note in report.notes:
        console.print(styled("yellow", "note:", f" {note}"))


def _versus_fp32(artifact: Any) -> str:
    """The quantization gate's figures for a reduced model, as each kind reports them: an embedding model's cosines
    and search overlap, a cross-encoder's largest score difference."""
    gate = artifact.quantization_gate or {}
    if "mean_cosine" in gate:
        return f"cosine {gate['mean_cosine']:.4f} / {gate['min_cosine']:.4f}, top-10 {gate['search_overlap']:.3f}"
    if "max_abs_score_diff" in gate:
        return f"max |Δ score| {gate['max_abs_score_diff']:.2e} over {gate['pairs']} pairs"
    return "-" if artifact.quantized_min_cosine is None else f"min cosine {artifact.quantized_min_cosine:.5f}"


@app.command()
def validate(
    # a str, not a Path: Path("") is ".", and an empty argument must be refused, not taken for the current folder
    repo: Annotated[str, typer.Argument(help="model repository folder")],
    gpus: Annotated[
        int, typer.Option(min=0, max=1024, help="GPUs on the target machine (ids 0..N-1) for KIND_GPU checks")
    ] = 8,
    image: Annotated[
        str | None,
        typer.Option(help="the serving container (…/tritonserver:<yy.mm>-<flavour>): engine and backend checks"),
    ] = None,
    auto_complete: Annotated[
        bool,
        typer.Option(
            "--auto-complete/--no-auto-complete",
            help="validate as Triton's default mode (NGC containers: backends complete configs from model files) "
            "instead of --disable-auto-complete-config, the mode tritonforge serve/deploy run Triton with (default)",
        ),
    ] = False,
    rate_limit: RateLimitOpt = "off",
    rate_limit_resource: RateLimitResourceOpt = None,
) -> None:
    """Check a whole repository against Triton's load-time rules. Exit 0 if valid, 1 with 'path: message' lines."""
    from tritonforge.validator import RateLimit
    from tritonforge.validator import validate as validate_repo

    try:
        limits = RateLimit.from_options(rate_limit, rate_limit_resource or ())
        validate_repo(repo, gpus=gpus, image=image, auto_complete=auto_complete, rate_limit=limits)
    except TritonForgeError as err:
        _fail(err)
    if not any(p.is_dir() for p in Path(repo).iterdir()):  # valid for Triton, but never what a user meant to check
        err_console.print(styled("yellow", "warning:", f" {repo} holds no model folder"))
    console.print(styled("green", "valid", f": {repo}"))


@app.command()
def serve(
    repo: Annotated[
        str, typer.Argument(help="model repository folder, or s3://[host:port/]bucket/prefix (AWS_* credentials)")
    ],
    http_port: Annotated[int | None, typer.Option(min=1, max=65535, help="default: a free port")] = None,
    grpc_port: Annotated[int | None, typer.Option(min=1, max=65535, help="default: a free port")] = None,
    metrics_port: Annotated[int | None, typer.Option(min=1, max=65535, help="default: a free port")] = None,
    host: Annotated[str, typer.Option(help="address to bind (with --gateway: the gateway's)")] = "127.0.0.1",
    triton_host: Annotated[str | None, typer.Option(
        help="address Triton binds (default: --host; with --gateway 127.0.0.1, so the gateway's keys cannot be "
        "gone around)")] = None,
    tritonserver: Annotated[Path | None, typer.Option(help="an external tritonserver binary", parser=path_arg)] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(help="key for Triton's model-repository, shared-memory, logging and trace APIs (default: "
                          "generated, printed)"),
    ] = None,
    open_admin: Annotated[
        bool, typer.Option("--no-admin-key", help="leave model loading/unloading open to anyone who can connect")
    ] = False,
    with_gateway: Annotated[
        bool, typer.Option("--gateway", help="also serve the OpenAI-compatible gateway (see `tritonforge gateway`)")
    ] = False,
    gateway_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="HTTP port of the gateway (with --gateway; default 9000)")
    ] = None,
    api_keys_file: ApiKeysFileOpt = None,
    admin_keys_file: AdminKeysFileOpt = None,
    splits: SplitsOpt = None,
    gateway_model: Annotated[
        list[str] | None, typer.Option("--gateway-model", help="the gateway's kind:id=ensemble (see gateway --model)")
    ] = None,
    insecure_no_auth: InsecureOpt = False,
    max_requests_in_flight: MaxInFlightOpt = None,
    max_requests_per_key: MaxPerKeyOpt = None,
    gateway_keep_alive: Annotated[float | None, typer.Option(
        "--gateway-keep-alive", min=0.1, max=3600, help="the gateway's --keep-alive (see `tritonforge gateway`)",
    )] = None,
    gateway_cors_origin: Annotated[list[str] | None, typer.Option(
        "--gateway-cors-origin", help="the gateway's --cors-origin, repeatable (see `tritonforge gateway`)",
    )] = None,
    log_level: LogLevelOpt = "info",
    rate_limit: RateLimitOpt = "off",
    rate_limit_resource: RateLimitResourceOpt = None,
    log_file: Annotated[
        Path | None,
        typer.Option(help="tritonserver's log (default: a temporary file, removed at exit)", parser=path_arg),
    ] = None,
) -> None:
    """Serve a repository on a real Triton (explicit model control, all models loaded) until SIGINT/SIGTERM.

    Triton's model-repository (load/unload), shared-memory, logging and trace APIs answer only requests with the
    header `tritonforge-admin-key: <key>` (gRPC: `triton-grpc-protocol-tritonforge-admin-key`); the key is generated
    and printed when none is given. With --gateway the
    OpenAI-compatible gateway runs in this process too, pointed at Triton's gRPC port, and stops with it.
    """
    if admin_key is not None and open_admin:  # the key was silently dropped and the admin APIs left open
        raise typer.BadParameter("give --admin-key or --no-admin-key, not both", param_hint="--no-admin-key")
    configure_logging(log_level)
    if gateway_port is None:
        gateway_port = DEFAULT_GATEWAY_PORT
    elif not with_gateway:  # accepted and ignored, a user would look for a gateway on it
        raise typer.BadParameter("needs --gateway", param_hint="--gateway-port")
    if with_gateway and gateway_port in (http_port, grpc_port, metrics_port):  # Triton took it; the gateway "ran"
        raise typer.BadParameter(f"{gateway_port} is also one of Triton's ports", param_hint="--gateway-port")
    gateway_setup = None
    if with_gateway:
        gateway_setup = prepare_gateway(host, api_keys_file, admin_keys_file, gateway_model, splits, insecure_no_auth,
                                        repo=repo, max_requests_in_flight=max_requests_in_flight,
                                        max_requests_per_key=max_requests_per_key, cors_origins=gateway_cors_origin)
    else:
        given = {"--api-keys-file": api_keys_file, "--admin-keys-file": admin_keys_file, "--splits": splits,
                 "--gateway-model": gateway_model, "--max-requests-in-flight": max_requests_in_flight,
                 "--max-requests-per-key": max_requests_per_key, "--gateway-keep-alive": gateway_keep_alive,
                 "--gateway-cors-origin": gateway_cors_origin}
        named = [flag for flag, value in given.items() if value is not None]
        if named:
            raise typer.BadParameter(f"{', '.join(named)} {'needs' if len(named) == 1 else 'need'} --gateway",
                                     param_hint="--gateway")
    from tritonforge.server import ADMIN_HEADER, GRPC_ADMIN_HEADER, TritonServer
    from tritonforge.server_process import exit_text
    from tritonforge.triton.options import is_loopback
    from tritonforge.validator import RateLimit

    # Triton's inference APIs take no key: on the gateway's address they went around its API keys, limits and
    # split guards (security review). With the gateway, Triton stays on loopback unless told otherwise.
    triton_host = triton_host or ("127.0.0.1" if with_gateway else host)
    try:
        limits = RateLimit.from_options(rate_limit, rate_limit_resource or ())
        server = TritonServer(
            repo,
            extra_args=limits.server_args(),
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            host=triton_host,
            tritonserver=tritonserver,
            admin_key=admin_key,  # none given: the server makes one (server.admin_key)
            open_admin=open_admin,
            log_file=log_file,
        )
    except TritonForgeError as err:
        _fail(err)
    caught: list[int] = []  # the signals received, in order: the exit code is the first's (130 Ctrl-C, 143 SIGTERM)
    serving = False  # Triton is up: the first signal ends the loop below (a handler only records: an Event's
    # set() from a handler could deadlock on the lock its wait() holds)

    def interrupt(signum: int, _frame: object) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    def end_serving(signum: int, _frame: object) -> None:
        caught.append(signum)
        for sig in watched:  # the next one stops at once (what is still draining is killed)
            signal.signal(sig, interrupt)

    # while starting (which can wait minutes on a repository) a signal interrupts the start and stops what was
    # started; once serving the first ends the loop below and the requests in flight may finish; a second one
    # stops at once. SIGHUP (the terminal closed) too: it skipped every cleanup
    watched = not_ignored()  # started under nohup: SIGHUP stays ignored
    for sig in watched:
        signal.signal(sig, interrupt)
    web = listener = None
    try:
        if gateway_setup is not None:  # its port is bound before Triton starts: one in use is refused first
            from tritonforge.gateway import listen as gateway_listen

            listener = gateway_listen.bind(host, gateway_port)
        with err_console.status("starting tritonserver…"):
            ep = server.start()
        serving = True
        for sig in watched:
            signal.signal(sig, end_serving)
        if gateway_setup is not None and listener is not None:
            with err_console.status("starting the gateway…"):
                web = gateway_listen.GatewayServer(gateway_setup.app(ep.grpc, triton_http=ep.http), listener,
                                                   keep_alive=gateway_keep_alive)
                web.start()
        console.print(styled("green", "ready", f"  gRPC {ep.grpc}   HTTP http://{ep.http}   metrics http://{ep.metrics}/metrics"))
        console.print(f"tritonserver log: {server.log_path}")
        if not is_loopback(triton_host):
            console.print(styled("yellow", "warning:", (
                f" Triton listens on {triton_host}: its inference APIs take no key, so whoever reaches that address "
                "can run every model (the admin key guards only model control, shared memory, logging and trace)"
            )))
        for stand_in in _random_stand_ins(repo):
            console.print(styled("yellow", "warning:", f" RANDOM stand-in served: {stand_in}"))
        if gateway_setup is not None:
            console.print(gateway_setup.banner(host, gateway_port, ep.grpc, ep.http))
        if server.admin_key and not admin_key:
            console.print(
                f"admin APIs (model control, shared memory, logging, trace) need the header {ADMIN_HEADER}: "
                f"{server.admin_key} "
                f"(gRPC: {GRPC_ADMIN_HEADER})"
            )
        console.print("Ctrl-C to stop")
        while not caught:
            time.sleep(0.2)
            if not server.is_running():
                # how it ended: killed (the OOM killer, typically), its log just stops, with no other hint
                how = exit_text(server.returncode)
                err_console.print(styled("bold red", f"tritonserver exited ({how})", "\n" + server.log_text()[-3000:]))
                raise typer.Exit(1)
            if web is not None and not web.is_alive():
                err_console.print(styled("bold red", "the gateway exited", ""))
                raise typer.Exit(1)
    except TritonForgeError as err:
        _fail(err)
    except KeyboardInterrupt:
        if not serving:
            _say("interrupted while starting: stopping")
    finally:
        # serving ended by a signal: the requests in flight may finish, unless a second one came already
        _stop_serving(server, web, listener, drain=serving and len(caught) == 1)
    _say("stopped", console)
    if caught:  # as if the signal had ended it, as every other command does (docs/serving.md)
        raise typer.Exit(exit_code(caught[0]))


UNLOAD_SECONDS = 10.0  # how long `serve` lets Triton unload its models past its exit timeout before killing it


def _say(text: str, to: Any = err_console) -> None:
    """A line that cannot stop the cleanup: after SIGHUP the terminal is gone, and writing to it fails (EIO, or a
    broken pipe, on which rich raises SystemExit(1)); either escaped before anything was stopped."""
    with contextlib.suppress(OSError, SystemExit):
        to.print(text)


def _stop_serving(server: Any, web: Any, listener: Any, *, drain: bool) -> None:
    """The gateway (its requests in flight get its grace), then Triton (its exit timeout), or, with ``drain`` False
    or on a signal meanwhile (Ctrl-C again), both at once: the gateway forced, Triton killed (its stop() still
    removes its stubs' shared memory and its log folder, which a Ctrl-C here used to leave)."""
    try:
        if not drain:
            raise KeyboardInterrupt
        grace = web.grace if web is not None else server.exit_timeout
        # Triton gives up on its requests after its exit timeout but does not exit until they finish (2.51: it
        # waits to unload a model with one in flight; a CPU generation of 450 tokens held it 30 s): it is killed
        # UNLOAD_SECONDS after that
        limit = server.exit_timeout + UNLOAD_SECONDS
        _say(f"stopping: requests in flight get up to {grace:.0f} s to finish, Triton {limit:.0f} s to exit "
             "(Ctrl-C again to stop now)")
        if web is not None:
            web.stop()
        elif listener is not None:
            listener.close()
        server.stop(timeout=limit)
    except KeyboardInterrupt:
        for sig in STOP_SIGNALS:  # stopping at once: nothing left for another signal to interrupt
            signal.signal(sig, signal.SIG_IGN)
        if drain:
            _say("stopping now")
        if web is not None:
            web.server.force_exit = True
            web.stop(timeout=0)
        elif listener is not None:
            listener.close()
        server.stop(timeout=0)
    for sig in STOP_SIGNALS:  # stopped: a signal now would only cut the last line short ("Aborted!", exit 1)
        signal.signal(sig, signal.SIG_IGN)


@app.command()
def demo(
    spec: Annotated[Path | None, typer.Option(help="default: examples/rag.yaml", parser=path_arg)] = None,
    out: Annotated[
        Path | None, typer.Option(help="keep the built repository here (default: a temp folder)", parser=path_arg)
    ] = None,
) -> None:
    """The main job: build the example offline, serve it on a real Triton, query it over gRPC and HTTP, stop."""
    from tritonforge.demo import run_demo

    try:
        run_demo(console, spec=spec, out=out)
    except TritonForgeError as err:
        _fail(err)
    except KeyboardInterrupt:  # what it started is stopped on the way out (it exited silently)
        err_console.print("interrupted: stopped")
        raise typer.Exit(130) from None


# Failed requests are left out of the latency percentiles: past 1% they outnumber the p99 tail they would have
# been part of, so a level's figures no longer describe the load it was sent.
DEFAULT_MAX_ERROR_RATE = 0.01


@app.command()
def bench(
    model: Annotated[str, typer.Option("--model", help="model to benchmark")],
    url: Annotated[str | None, typer.Option(help="host:port (default localhost:8001 grpc, :8000 http)")] = None,
    protocol: Annotated[str, typer.Option(help="grpc or http")] = "grpc",
    concurrency: Annotated[str, typer.Option(help="closed-loop levels, comma separated")] = "1,4,16",
    rate: Annotated[float | None, typer.Option(help="open loop: Poisson arrivals at R requests/s")] = None,
    duration: Annotated[float, typer.Option(help="measured seconds per level")] = 5.0,
    warmup: Annotated[float, typer.Option(help="unmeasured seconds before each level")] = 1.0,
    data: Annotated[
        Path | None, typer.Option(help="JSON data file (default: generated from the config)", parser=path_arg)
    ] = None,
    batch_size: Annotated[int, typer.Option(help="items per request")] = 1,
    max_requests: Annotated[int | None, typer.Option(help="at most this many measured requests per level")] = None,
    timeout: Annotated[float, typer.Option(help="per-request deadline, seconds")] = 30.0,
    streaming: Annotated[bool | None, typer.Option(help="gRPC streams (default: the model's decoupled flag)")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write every number to this JSON file", parser=path_arg)
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="write throughput/latency/server-split charts (PNG)", parser=path_arg)
    ] = None,
    allow_remote: Annotated[bool, typer.Option(help="allow a non-loopback server (sends it real load)")] = False,
    max_error_rate: Annotated[
        float,
        typer.Option(
            help="fail (exit 1) when a level's failed requests exceed this share of those sent, 0..1 (1: only a "
            "level with no successful request fails)"
        ),
    ] = DEFAULT_MAX_ERROR_RATE,
) -> None:
    """Benchmark a model on a running Triton: latency percentiles, throughput, Triton's server-side split.

    For OpenAI endpoints (the gateway) and LLM metrics (TTFT, inter-token latency, tokens/s) use NVIDIA's aiperf.
    Ctrl-C (or SIGTERM) stops it after the requests in flight: the levels completed are shown and written.
    """
    from tritonforge.bench import error_lines, parse_concurrency, report_tables, run_bench
    from tritonforge.bench.report import error_rate_problems, mismatch_lines

    if protocol not in ("grpc", "http"):
        raise typer.BadParameter(f"'{protocol}' is not a protocol; choose grpc or http", param_hint="--protocol")
    if not 0 <= max_error_rate <= 1:  # NaN too
        raise typer.BadParameter(
            f"{max_error_rate} is not a share of requests; give a number from 0 to 1", param_hint="--max-error-rate"
        )
    _output_file(json_out, "--json")
    _output_file(plot, "--plot", ".png")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:  # known now, not after the whole run
        raise typer.BadParameter("drawing the plot needs matplotlib (pip install matplotlib, or the `cpu` extra)",
                                 param_hint="--plot")
    with StopOnSignals() as signals:
        try:
            with err_console.status("benchmarking…") as status:
                report = run_bench(
                    url,
                    model,
                    protocol=protocol,  # type: ignore[arg-type]
                    concurrency=None if rate is not None else parse_concurrency(concurrency),
                    rate=rate,
                    duration_s=duration,
                    warmup_s=warmup,
                    inputs=data if data is not None else "auto",
                    batch_size=batch_size,
                    max_requests=max_requests,
                    streaming=streaming,
                    timeout=timeout,
                    allow_remote=allow_remote,
                    progress=lambda m: status.update(m),
                    stop=signals.stop,
                )
            for table in report_tables(report):
                console.print(table)
            for line in error_lines(report):
                err_console.print(styled("yellow", "errors", f" {line}"))
            for line in mismatch_lines(report):
                err_console.print(styled("yellow", "server split", f" {line}"))
            if json_out is not None:
                console.print(f"wrote {report.write_json(json_out)}")
            if plot is not None and report.levels:
                console.print(f"wrote {report.plot(plot)}")
        except TritonForgeError as err:
            _fail(err)
    problems = error_rate_problems(report, max_error_rate)
    for line in problems:  # failed requests are left out of the latency figures: a script must not read them
        err_console.print(styled("bold red", "error:", f" {line}"))
    if signals.caught:  # after the output: the levels measured before the signal are kept
        done = f"{len(report.levels)} level(s) completed" + (
            f", {report.interrupted_during} cut short and not reported" if report.interrupted_during else ""
        )
        err_console.print(styled("bold red", "interrupted:", f" {done}"))
        raise typer.Exit(exit_code(signals.caught[0]))  # as if the signal had ended it
    if problems:
        raise typer.Exit(1)


@app.command()
def quality(
    url: Annotated[str, typer.Option(help="Triton gRPC host:port serving the rag repository")] = "127.0.0.1:8001",
    questions: Annotated[
        Path | None,
        typer.Option(
            help="labelled questions (JSONL: id, question, passage, key_fact); default: the example set",
            parser=path_arg,
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="answer length for the rag ensemble")] = 48,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="write the figures and every answer here", parser=path_arg)
    ] = None,
) -> None:
    """Measure a served RAG repository: search recall@k (with and without reranking), rag answers that contain the
    key fact and cite the right passage."""
    from tritonforge.demo import example_spec
    from tritonforge.quality import evaluate, load_questions, report_table

    _output_file(json_out, "--json")
    try:
        asked = load_questions(questions or example_spec("data/questions.jsonl", "--questions"))
        with err_console.status("asking the question set…"):
            report = evaluate(url, asked, max_tokens=max_tokens)
    except TritonForgeError as err:
        err_console.print(styled("bold red", "error:", f" {err}"))
        raise typer.Exit(1) from None
    console.print(report_table(report))
    for failure in report.failures:
        err_console.print(styled("yellow", "failed", f" {failure['id']} ({failure['pipeline']}): {failure['error']}"))
    if json_out is not None:
        from tritonforge.atomic_file import write_text_atomic

        text = json.dumps(report.as_dict(), indent=2) + "\n"
        try:  # folders created, the file replaced whole: a full disk leaves no truncated JSON
            console.print(f"wrote {write_text_atomic(json_out, text)}")
        except TritonForgeError as err:
            err_console.print(styled("bold red", "error:", f" {err}"))
            raise typer.Exit(1) from None
    if report.failures:  # the figures are over the questions answered: a script must not take them for the set's
        failed = len({f["id"] for f in report.failures})  # a question can fail in search and in rag
        err_console.print(styled(
            "bold red", "error:", f" {failed} of {report.questions} question(s) failed (listed above)"
        ))
        raise typer.Exit(1)


@app.command()
def gateway(
    triton: Annotated[str, typer.Option(
        "--triton", help="Triton gRPC endpoint host:port, or dns:///name:port (every address of the name in turn)"
    )] = "127.0.0.1:8001",
    triton_http: Annotated[str | None, typer.Option(
        "--triton-http", help="Triton's HTTP endpoint host:port: embeddings and rerank go over it (less CPU per "
        "request than gRPC; docs/serving.md); chat, completions and everything else stay on --triton",
    )] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of the gateway")] = DEFAULT_GATEWAY_PORT,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    api_keys_file: ApiKeysFileOpt = None,
    model: GatewayModelOpt = None,
    insecure_no_auth: InsecureOpt = False,
    splits: SplitsOpt = None,
    admin_keys_file: AdminKeysFileOpt = None,
    embed_batch_size: Annotated[
        int | None,
        typer.Option(help="texts per Triton request of /v1/embeddings (default 32; <= the ensemble's max_batch_size)"),
    ] = None,
    embed_requests_in_flight: Annotated[
        int | None,
        typer.Option(help="of one /v1/embeddings request's Triton requests at a time (default 2; docs/serving.md)"),
    ] = None,
    chat_max_tokens: Annotated[
        int | None, typer.Option(help="max_tokens of a chat request that sends none (default 64)"),
    ] = None,
    max_requests_in_flight: MaxInFlightOpt = None,
    max_requests_per_key: MaxPerKeyOpt = None,
    log_level: LogLevelOpt = "info",
    metrics_port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="also serve GET /metrics without an API key on this port (for Prometheus; keep it "
        "off the public Service)",
    )] = None,
    keep_alive: KeepAliveOpt = None,
    cors_origin: CorsOriginOpt = None,
    auto_truncate: Annotated[bool, typer.Option(
        "--auto-truncate", help="cut an embeddings input over the model's length to it (TEI's flag; what earlier "
        "tritonforge did) instead of answering 400 context_length_exceeded",
    )] = False,
) -> None:
    """Serve an OpenAI-compatible API (chat, completions, embeddings, rerank) in front of Triton (uvicorn)."""
    configure_logging(log_level)
    if triton_http is not None:
        from tritonforge.triton.options import split_url

        try:
            split_url(triton_http, "http")
        except TritonForgeError as err:  # found before anything starts, not at the first embeddings request
            raise typer.BadParameter(str(err), param_hint="--triton-http") from None
    setup = prepare_gateway(host, api_keys_file, admin_keys_file, model, splits, insecure_no_auth,
                            embed_batch_size, embed_requests_in_flight, chat_max_tokens,
                            max_requests_in_flight=max_requests_in_flight, max_requests_per_key=max_requests_per_key,
                            cors_origins=cors_origin, auto_truncate=auto_truncate)
    from tritonforge.gateway import listen as gateway_listen

    if metrics_port == port:
        raise typer.BadParameter(f"{port} is the gateway's --port: give the metrics another",
                                 param_hint="--metrics-port")
    app_ = setup.app(triton, metrics_port, triton_http)
    try:
        listener = gateway_listen.bind(host, port)
        more = (gateway_listen.bind(host, metrics_port),) if metrics_port is not None else ()
    except TritonForgeError as err:
        _fail(err)
    shown = _address_shown(triton)
    console.print(setup.banner(host, port, shown, triton_http))
    if metrics_port is not None:
        console.print(f"metrics on http://{host}:{metrics_port}/metrics (no API key)")
    unserved = _unserved_by_triton(triton, setup)
    if unserved is None:  # it started "fine" and answered every request 503 (first-run audit)
        console.print(styled("yellow", "warning:", (
            f" Triton does not answer at {shown} (yet): requests fail with 503 until it does. `tritonforge serve` "
            "picks free ports unless told: pass its printed gRPC address as --triton, or serve with --grpc-port"
        )))
    elif unserved:
        console.print(styled("yellow", "warning:", (
            f" Triton at {shown} does not serve {', '.join(unserved)} (not ready): requests for them fail with 503 "
            "until it does (--model names what the gateway serves)"
        )))
    gateway_listen.GatewayServer(app_, listener, more=more, keep_alive=keep_alive).run()


def _address_shown(url: str) -> str:
    """``url`` as the gateway dials it, its default port included (``localhost`` is ``localhost:8001``)."""
    from tritonforge.triton.options import split_url

    try:
        address, secure = split_url(url, "grpc")
    except TritonForgeError:
        return url  # the connection's own error says what is wrong with it
    return f"grpcs://{address}" if secure else address


def _unserved_by_triton(url: str, setup: Any) -> list[str] | None:
    """What the gateway would call that Triton does not serve (GatewaySetup.unserved); None: Triton does not answer."""
    from tritonforge.triton.connection import Connection

    try:
        with Connection(url, timeout=3) as conn:
            if not conn.is_live():
                return None
            return list(setup.unserved(lambda model, version: _ready(conn, model, version)))
    except TritonForgeError:
        return None


def _ready(conn: Any, model: str, version: str) -> bool:
    try:
        return bool(conn.is_model_ready(model, version))
    except TritonForgeError:  # e.g. the model API restricted: not known, not reported
        return True


# ------------------------------------------------------------------------------------------------------ releases

app.add_typer(release_app, name="release")  # tritonforge/cli_release.py
app.add_typer(deploy_app, name="deploy")  # tritonforge/cli_deploy.py
app.command()(push)


def terminate_like_interrupt() -> None:
    """SIGTERM ends a command as Ctrl-C does, through its cleanup (a build's half-written cache entry, say: it was
    left behind), with the exit code of a SIGTERM (143). serve and gateway set their own handlers."""

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(exit_code(signum))

    signal.signal(signal.SIGTERM, terminated)


def main() -> None:
    # libraries' own tqdm bars (transformers converting the GGUF checkpoint and loading weights) broke into the
    # commands' status lines on stderr (the demo's output: new-user audit); TQDM_DISABLE=0 brings them back. tqdm
    # reads it when first imported, which is later than this
    os.environ.setdefault("TQDM_DISABLE", "1")
    terminate_like_interrupt()
    try:
        app()
    except ModuleNotFoundError as err:
        extra = missing_extra(err)
        if extra is None:
            raise
        err_console.print(styled("bold red", "error:", (
            f" this command needs the `{extra}` extra ({err.name} is not installed): "
            f"pip install \"tritonforge[{extra}]\""
        )))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
