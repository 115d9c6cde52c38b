"""The gateway's side of the CLI: its options (shared by `gateway` and `serve --gateway`) and everything it needs
that can be wrong, checked before anything starts."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from tritonforge.cli_output import err_console, missing_extra, styled
from tritonforge.cli_paths import path_arg

ApiKeysFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--api-keys-file", help="gateway API keys, one per line (also: $TRITONFORGE_API_KEYS)", parser=path_arg
    ),
]
AdminKeysFileOpt = Annotated[
    Path | None,
    typer.Option("--admin-keys-file",
                 help="keys of the gateway's /admin endpoints (PUT /admin/splits), one per line", parser=path_arg),
]
SplitsOpt = Annotated[
    Path | None,
    typer.Option("--splits", help="A/B and canary splits (YAML/JSON), re-read when the file changes", parser=path_arg),
]
GatewayModelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="kind:id=ensemble[@engine] (kind chat|embeddings|rerank; @: a chat ensemble's engine step), "
        "repeatable; default: serve --gateway's repository's own (recorded by its build), else the "
        "examples/rag.yaml ids chat=llm, minilm=embed, reranker=rerank",
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure-no-auth", help="allow serving without API keys on a non-loopback address")
]
MaxInFlightOpt = Annotated[
    int | None,
    typer.Option("--max-requests-in-flight", min=1,
                 help="requests running models at once; more get 429 with Retry-After (default 1024)"),
]
MaxPerKeyOpt = Annotated[
    int | None,
    typer.Option("--max-requests-per-key", min=0,
                 help="of those, per API key (default 0: no limit per key)"),
]

CorsOriginOpt = Annotated[
    list[str] | None,
    typer.Option("--cors-origin", help="a browser origin (scheme://host[:port], or * for any) whose pages may call the "
                 "gateway (CORS), repeatable; default none: CORS off. A key a page sends is visible to its users"),
]
KeepAliveOpt = Annotated[
    float | None,
    typer.Option(min=0.1, max=3600, help="seconds an idle client connection is kept open (uvicorn's 5 s by default; "
                 "behind a load balancer set it above the balancer's idle timeout, e.g. 65 for AWS ALB's 60)"),
]


LOG_LEVELS = ("debug", "info", "warning", "error")
LogLevelOpt = Annotated[
    str,
    typer.Option("--log-level", help="tritonforge's log on stderr (the gateway's failed requests at info and "
                 "warning, the launcher's stub heals): debug, info, warning or error"),
]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to sys.stderr as it is at each record, as logging's last-resort handler does: a StreamHandler keeps
    the stream it was made with, and once that one is closed (a CLI run under click's test runner, then the next
    test's records) every record printed "--- Logging error ---" with a stack instead of itself (CI's output)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:  # StreamHandler.__init__ sets it; the property decides
        pass


def configure_logging(level: str) -> None:
    """tritonforge's loggers to stderr with time, level and name: nothing configured logging, so Python's last-resort
    handler printed warnings bare and dropped the rest (a failed request was never logged; operations audit)."""
    if level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"'{level}' is not a level; choose {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("tritonforge")
    ours.handlers[:] = [handler]  # the root logger has none (uvicorn configures only its own): no line twice
    ours.setLevel(level.upper())


@dataclass(frozen=True)
class GatewaySetup:
    keys: list[str]
    admin_keys: list[str]
    models: object  # GatewayModels
    splits: object | None  # SplitRouter
    checkers: tuple[object, object] = (None, None)  # KeyCheckers watching --api-keys-file / --admin-keys-file
    limits: object | None = None  # GatewayLimits
    cors_origins: tuple[str, ...] = ()  # --cors-origin

    def app(self, triton: str, metrics_port: int | None = None, triton_http: str | None = None) -> object:
        from tritonforge.gateway import create_app

        models, splits = self.models, self.splits
        pairs = zip(self.checkers, (self.keys, self.admin_keys), strict=True)
        api_keys, admin_keys = (checker if checker is not None else keys for checker, keys in pairs)
        return create_app(triton, api_keys=api_keys, models=models, splits=splits, admin_keys=admin_keys,  # type: ignore[arg-type]
                          limits=self.limits, metrics_port=metrics_port, triton_http_url=triton_http,  # type: ignore[arg-type]
                          cors_origins=self.cors_origins)

    def unserved(self, is_ready: Callable[[str, str], bool]) -> list[str]:
        """What the gateway would call that Triton does not serve now (``is_ready(model, version)`` False): each
        model id's ensemble, each split arm's pinned version. A warning at start, not a refusal (a canary's version
        may be loaded later): a split's arm pinned to a version never loaded answered 503s with Retry-After to its
        share of the requests, its guard tripping only after min_requests failures (new-user audit)."""
        served = {model_id: ensemble for model_id, _kind, ensemble in self.models.ids()}  # type: ignore[attr-defined]
        wanted: dict[tuple[str, str], list[str]] = {}
        for model_id, kind, ensemble in self.models.ids():  # type: ignore[attr-defined]
            wanted.setdefault((ensemble, ""), []).append(f"{kind} model {model_id}")
        splits = self.splits.config.splits if self.splits is not None else {}  # type: ignore[attr-defined]
        for name, split in splits.items():
            for arm in split.arms:
                if arm.model in served:  # split_problems refused any other
                    users = wanted.setdefault((served[arm.model], arm.triton_version), [])
                    users.append(f"split {name}, arm {arm.name}")
        missing = []
        for (ensemble, version), users in wanted.items():
            if not is_ready(ensemble, version):
                missing.append(f"{ensemble}{f' version {version}' if version else ''} ({'; '.join(users)})")
        return missing

    def banner(self, host: str, port: int, triton: str, triton_http: str | None = None) -> str:
        keys = self.keys
        auth = f"{len(keys)} API key{'s' * (len(keys) != 1)}" if keys else "NO API keys (open)"
        splits = f", splits {', '.join(self.splits.names())}" if self.splits is not None else ""  # type: ignore[attr-defined]
        http = f" (embeddings and rerank over HTTP {triton_http})" if triton_http else ""
        cors = f", CORS for {', '.join(self.cors_origins)}" if self.cors_origins else ""
        return f"gateway on http://{host}:{port}/v1 -> Triton gRPC {triton}{http}, {auth}{splits}{cors}"


def prepare_gateway(
    host: str,
    api_keys_file: Path | None,
    admin_keys_file: Path | None,
    model: list[str] | None,
    splits: Path | None,
    insecure_no_auth: bool,
    embed_batch_size: int | None = None,
    embed_requests_in_flight: int | None = None,
    chat_max_tokens: int | None = None,
    repo: str | None = None,
    max_requests_in_flight: int | None = None,
    max_requests_per_key: int | None = None,
    cors_origins: list[str] | None = None,
    auto_truncate: bool = False,
) -> GatewaySetup:
    """Everything the gateway needs that can be wrong, checked before anything starts (exit 1, or 2 when open).
    Without --model the gateway serves the models ``repo``'s build recorded, else examples/rag.yaml's ids."""
    try:
        import uvicorn  # noqa: F401

        from tritonforge.gateway import GatewayLimits, GatewayModels, split_problems
        from tritonforge.gateway.app import check_cors_origins
        from tritonforge.gateway.auth import (
            ENV_VAR,
            KeyChecker,
            is_loopback,
            load_api_keys,
            parse_env_keys,
            parse_key_file,
        )
        from tritonforge.gateway.splits import SplitConfigError, SplitRouter
    except ModuleNotFoundError as err:
        # only a module the extra installs is a missing extra: anything else (a broken install, an import error
        # inside the gateway's own modules) was reported as "needs the `gateway` extra" too, hiding the real error
        if missing_extra(err) != "gateway":
            raise
        err_console.print(styled("bold red", "error:", f" the gateway needs the `gateway` extra ({err.name} missing): "
                                 'pip install "tritonforge[gateway]"'))
        raise typer.Exit(1) from None
    try:
        check_cors_origins(cors_origins or ())
        keys = load_api_keys(api_keys_file)
        admin_keys = parse_key_file(admin_keys_file) if admin_keys_file is not None else []
        # the key files are read again when they change: a revoked or rotated key took a restart
        checkers = (
            KeyChecker(parse_env_keys(os.environ.get(ENV_VAR)), path=api_keys_file) if api_keys_file else None,
            KeyChecker((), path=admin_keys_file) if admin_keys_file else None,
        )
        models = GatewayModels.parse(model) if model else (_recorded_gateway_models(repo) or GatewayModels())
        tuning = {"embed_batch_size": embed_batch_size, "embed_requests_in_flight": embed_requests_in_flight,
                  "chat_max_tokens": chat_max_tokens, "auto_truncate": auto_truncate or None}
        models = dataclasses.replace(models, **{k: v for k, v in tuning.items() if v is not None})
        router = None
        if splits is not None:
            router = SplitRouter(path=splits, validate=lambda config: split_problems(models, config))
    except SplitConfigError as err:
        err_console.print(styled("bold red", "error:", f" {err}"))
        raise typer.Exit(1) from None
    except (OSError, ValueError) as err:
        err_console.print(styled("bold red", "error:", f" {err}"))
        raise typer.Exit(1) from None
    if not keys and not is_loopback(host) and not insecure_no_auth:
        err_console.print(styled(
            "bold red", "error:", f" refusing to serve without API keys on {host} (not loopback): give --api-keys-file "
            "or TRITONFORGE_API_KEYS, or --insecure-no-auth"
        ))
        raise typer.Exit(2)
    if cors_origins and not keys:
        err_console.print(styled("yellow", "warning:", (
            f" CORS for {', '.join(cors_origins)} without API keys: any page of those origins can use the gateway from "
            "its visitors' browsers"
        )))
    bounds = {"requests_in_flight": max_requests_in_flight, "requests_in_flight_per_key": max_requests_per_key}
    limits = GatewayLimits(**{k: v for k, v in bounds.items() if v is not None})
    return GatewaySetup(keys, admin_keys, models, router, checkers, limits, tuple(cors_origins or ()))


def _recorded_gateway_models(repo: str | None) -> Any:
    """The gateway models a local repository's build recorded in its tritonforge.json, or None."""
    from tritonforge.build_manifest import read_build_manifest
    from tritonforge.gateway import GatewayModels

    # an object-store repository has no local record; an unreadable one is serve's to report (defaults kept)
    info = read_build_manifest(repo) if repo and "://" not in repo else None
    return GatewayModels.from_build_info(info) if info is not None else None
