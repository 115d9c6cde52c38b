"""How to reach a Triton server: URLs, TLS, keepalive, retries, and the keyword arguments of tritonclient's clients.

Part of the one Triton access layer (:mod:`tritonforge.triton`): nothing outside this package builds a tritonclient
client or parses a Triton URL.
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonforge.errors import InvalidInputError
from tritonforge.values import is_real, is_whole

Protocol = Literal["grpc", "http"]
Compression = Literal["gzip", "deflate"]

INT32_MAX = 2**31 - 1
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
ADMIN_HEADER = "tritonforge-admin-key"  # the HTTP header an admin key travels in
# over gRPC Triton reads a restricted API's key from this metadata key (its gRPC frontend prefixes the header name)
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# the Triton APIs an admin key guards (model control, shared memory, logging, trace): inference, health, metadata
# and statistics stay open to clients. Triton takes the key only on its command line, so `ps` on the host shows it:
# keep it to a host whose process list is private, and Triton's ports off untrusted networks (the gateway is the
# public face)
RESTRICTED_APIS = "model-repository,shared-memory,logging,trace"


def restricted_api_args(admin_key: str) -> list[str]:
    """tritonserver's flags that answer the admin APIs only with ``admin_key`` in the ADMIN_HEADER header, over HTTP
    and gRPC (``tritonforge serve``, and `deploy k8s --admin-key-secret` with ``$(TRITON_ADMIN_KEY)``)."""
    restricted = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={admin_key}"
    return [f"--http-restricted-api={restricted}", f"--grpc-restricted-protocol={restricted}"]


# ------------------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class TLSOptions:
    """TLS for either protocol. Paths are PEM files.

    ``root_certificates``: CA bundle that signed the server (None: the system's). ``certificate_chain`` and
    ``private_key``: the client's certificate for mutual TLS (both or neither). ``server_name``: the name to verify
    the server's certificate against when it differs from the URL's host. ``insecure``: skip verification (HTTP).
    """

    root_certificates: str | Path | None = None
    certificate_chain: str | Path | None = None
    private_key: str | Path | None = None
    server_name: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise InvalidInputError("TLSOptions: mutual TLS needs both certificate_chain and private_key (or neither)")

    def check_files(self) -> None:
        for name in ("root_certificates", "certificate_chain", "private_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise InvalidInputError(f"TLSOptions.{name}: {path} is not a file")


@dataclass(frozen=True)
class KeepAliveOptions:
    """gRPC keepalive (milliseconds), as tritonclient's KeepAliveOptions; the defaults are gRPC's."""

    time_ms: int = INT32_MAX
    timeout_ms: int = 20_000
    permit_without_calls: bool = False
    max_pings_without_data: int = 2

    def __post_init__(self) -> None:
        values = (self.time_ms, self.timeout_ms, self.max_pings_without_data)
        if not all(is_whole(v) for v in values) or self.time_ms <= 0 or self.timeout_ms <= 0 or values[2] < 0:
            raise InvalidInputError(f"KeepAliveOptions: times must be > 0 ms and pings >= 0, got {self}")
        if any(v > INT32_MAX for v in values):  # gRPC channel arguments are C ints
            raise InvalidInputError(f"KeepAliveOptions: values must be <= {INT32_MAX}, got {self}")
        if not isinstance(self.permit_without_calls, bool):
            raise InvalidInputError(f"KeepAliveOptions: permit_without_calls must be True or False, got {self}")
        for name in ("time_ms", "timeout_ms", "max_pings_without_data"):  # numpy's too: kept as int for gRPC
            object.__setattr__(self, name, int(getattr(self, name)))


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first; the n-th wait is ``min(max_backoff, backoff * 2**n)`` scaled by a
    random factor in ``[1 - jitter, 1]``."""

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not is_whole(self.retries) or self.retries < 0:
            raise InvalidInputError(f"retries={self.retries!r} must be >= 0 (a whole number)")
        object.__setattr__(self, "retries", int(self.retries))
        if not is_real(self.backoff) or not is_real(self.max_backoff) or self.backoff < 0 or self.max_backoff < 0:
            raise InvalidInputError(
                f"backoff={self.backoff!r} and max_backoff={self.max_backoff!r} must be >= 0 seconds"
            )
        if not is_real(self.jitter) or not 0 <= self.jitter <= 1:
            raise InvalidInputError(f"jitter={self.jitter!r} must be within [0, 1]")
        for name in ("backoff", "max_backoff", "jitter"):  # numpy's too: kept as float
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        base = min(self.max_backoff, self.backoff * (2.0**retry))
        return base * (1.0 - self.jitter * rng())


@dataclass(frozen=True)
class ClientOptions:
    """Everything a client is configured with besides its URL and protocol."""

    timeout: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TLSOptions | None = None
    keepalive: KeepAliveOptions | None = None
    compression: Compression | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None and (not is_real(self.timeout) or not self.timeout > 0):
            raise InvalidInputError(f"timeout={self.timeout!r} must be > 0 seconds (or None for no deadline)")
        if self.timeout is not None:  # numpy's too: tritonclient is handed a float
            object.__setattr__(self, "timeout", float(self.timeout))
        for name, kind in (("retry", RetryPolicy), ("tls", TLSOptions), ("keepalive", KeepAliveOptions)):
            value = getattr(self, name)
            if not isinstance(value, kind) and (value is not None or name == "retry"):
                raise InvalidInputError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
        if not isinstance(self.headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise InvalidInputError(
                f"headers must be a mapping of header name -> value (str -> str), got {self.headers!r}"
            )
        if self.compression not in (None, "gzip", "deflate"):
            raise InvalidInputError(f"compression={self.compression!r} is not one of 'gzip', 'deflate', None")


def admin_headers(admin_key: str | None, protocol: str = "http") -> dict[str, str]:
    """The header that carries the admin key to Triton's restricted APIs: over gRPC Triton reads it under its
    prefixed name (:data:`GRPC_ADMIN_HEADER`)."""
    if not admin_key:
        return {}
    return {GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER: admin_key}


# ----------------------------------------------------------------------------------------------------------- URLs


def split_url(url: str, protocol: str) -> tuple[str, bool]:
    """``host:port`` for tritonclient, and whether the scheme asked for TLS (https://, grpcs://).

    A URL that cannot be used is an InvalidInputError (a ClientError and a ValueError) naming it and the forms
    allowed: it is refused before anything is sent."""
    forms = "'host:port', '[ipv6]:port' or scheme://host:port with scheme grpc, grpcs, http or https"
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(f"url {url!r} is not a server address: give {forms}")
    rest, secure, dns = url.strip(), False, False
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        scheme = scheme.lower()
        if scheme == "dns" and protocol != "http":
            # gRPC's own resolver: every address of the name, a request each in turn (round_robin), e.g. a
            # Kubernetes headless Service's pods; a plain host:port keeps one connection to one of them
            dns, rest = True, rest.removeprefix("/")
            scheme = "grpc"
        if scheme not in ("http", "https", "grpc", "grpcs"):
            also = "" if protocol == "http" else ", or dns:///host:port (gRPC: every address of the name in turn)"
            raise InvalidInputError(f"url {url!r}: scheme {scheme!r} is not one of grpc, grpcs, http, https{also}")
        secure = scheme in ("https", "grpcs")
        # a scheme naming the other transport would be spoken to in the wrong one (gRPC frames to an HTTP port
        # fail as an opaque "unavailable"): refuse it rather than guess which of the two the caller meant
        named = "http" if scheme in ("http", "https") else "grpc"
        if protocol in ("grpc", "http") and named != protocol:
            raise InvalidInputError(
                f"url {url!r} is a{'n HTTP' if named == 'http' else ' gRPC'} address but protocol is {protocol!r}: "
                f"pass protocol={named!r}, or a {'grpc' if named == 'http' else 'http'}:// address"
            )
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        # Triton's paths (/v2/...) are the client's to add; a path here would be dropped or sent to the wrong place
        raise InvalidInputError(f"url {url!r} must be host:port without a path: give {forms}")
    # [ipv6]:port, host:port, or a bare name, IPv4 or IPv6 address (the protocol's default port)
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, ""
    port = port or str(DEFAULT_PORTS.get(protocol, 8001))
    if not host:
        raise InvalidInputError(f"url {url!r} has no host: give {forms}")
    if not _is_host(host):  # tritonclient failed on it half-way, as a plain ClientError (HTTP) or after retries
        raise InvalidInputError(f"url {url!r}: {host!r} is not a host name or an IP address: give {forms}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"url {url!r}: port {port!r} is not a TCP port (1..65535)")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"dns:///{address}" if dns else address), secure


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")


def _is_host(host: str) -> bool:
    """An IP address, or a DNS name of letters, digits, '-' and '_' labels (Kubernetes Service names have '_' in
    SRV-style records) of at most 253 characters."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and bool(_HOST_NAME.fullmatch(host))


def host_of(address: str) -> str:
    """The host of ``host:port`` or ``dns:///host:port`` (IPv6 without brackets)."""
    address = address.removeprefix("dns:///")
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1, localhost): a
    benchmark's target, or a bind address that only listens on this machine."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


# ------------------------------------------------------------------------------------- tritonclient construction


def grpc_client_kwargs(url: str, options: ClientOptions) -> dict[str, Any]:
    """Keyword arguments for ``tritonclient.grpc(.aio).InferenceServerClient``.

    Channel arguments are always given whole (tritonclient then ignores ``keepalive_options``): message size limits
    as tritonclient's defaults, keepalive, a reconnect backoff that follows the retry policy (gRPC's own starts at
    1 s and would make fast retries fail without trying), and the TLS server-name override.
    """
    kwargs: dict[str, Any] = {"url": url, "verbose": options.verbose}
    tls = options.tls
    if tls is not None:
        if tls.insecure:
            raise InvalidInputError("TLSOptions.insecure is not supported over gRPC: give root_certificates instead")
        kwargs.update(
            ssl=True,
            root_certificates=None if tls.root_certificates is None else str(tls.root_certificates),
            private_key=None if tls.private_key is None else str(tls.private_key),
            certificate_chain=None if tls.certificate_chain is None else str(tls.certificate_chain),
        )
    ka = options.keepalive or KeepAliveOptions()
    retry = options.retry
    initial_ms = max(50, int(retry.backoff * 1000))
    max_ms = max(initial_ms, int(retry.max_backoff * 1000))
    channel_args: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.keepalive_time_ms", ka.time_ms),
        ("grpc.keepalive_timeout_ms", ka.timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(ka.permit_without_calls)),
        ("grpc.http2.max_pings_without_data", ka.max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", initial_ms),
        ("grpc.min_reconnect_backoff_ms", initial_ms),
        ("grpc.max_reconnect_backoff_ms", max_ms),
    ]
    if tls is not None and tls.server_name:
        channel_args.append(("grpc.ssl_target_name_override", tls.server_name))
    if url.startswith("dns:"):  # spread requests over every address (pick_first, the default, uses one)
        channel_args.append(("grpc.lb_policy_name", "round_robin"))
    kwargs["channel_args"] = channel_args
    return kwargs


# ---------------------------------------------------------------------------------------------------- tensors


def ssl_context(tls: TLSOptions | None) -> Any:
    """An ``ssl.SSLContext`` for plain HTTP calls (Triton's generate extension), None without TLS."""
    if tls is None:
        return None
    import ssl

    context = ssl.create_default_context(cafile=None if tls.root_certificates is None else str(tls.root_certificates))
    if tls.certificate_chain is not None:
        context.load_cert_chain(str(tls.certificate_chain), None if tls.private_key is None else str(tls.private_key))
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
