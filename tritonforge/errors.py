"""One exception tree for the whole toolkit.

TritonForgeError
├── SpecError              a deployment spec that does not parse or breaks a rule (every problem, with field paths)
├── BuildError             an artifact could not be produced (missing weights, export failure, ...)
│   └── ParityError        an exported model disagrees with its PyTorch reference beyond tolerance
├── RepositoryError        a model repository is invalid or could not be written
│   ├── ValidationError    Triton's load-time rules are broken (every problem, as "path: message")
│   └── ReleaseError       a version could not be added, promoted, rolled back or pinned (previous one still serves)
│       └── ReleaseInterrupted  a stop signal came while Triton loaded: held until files and server agreed
├── ServerError            tritonserver could not be found, started, or did not become ready
├── DeployError            cluster manifests or an object-store push cannot be made from these inputs
├── SplitConfigError       an A/B or canary split configuration cannot be used (every problem; also a ValueError)
├── OptionError            an option or argument refused before any work (also a ValueError)
├── OutputFileError        a result file (a benchmark's JSON or plot, the quality report) could not be written
├── QualityError           a quality run's question set or options cannot be used (tritonforge.quality)
├── APIError               the gateway's answer to a request it refuses or cannot serve (an OpenAI-style error
│                          body with its HTTP status; defined in tritonforge.gateway)
└── ClientError            a request failed (bad input, unknown model, deadline, transport)
    ├── InvalidInputError  an argument refused before anything was sent (also a ValueError)
    ├── TransientError     a transport failure worth retrying (unavailable, reset, timeout while connecting)
    ├── OverloadedError    the model's queue is full and Triton shed the request (not retried: back off instead)
    ├── DeadlineExceededError  the call's deadline passed (not retried: the request may have run on the server)
    ├── ModelNotFoundError the server has no such model or version loaded
    ├── ModelNotReadyError the model is loaded but cannot serve now (a python stub being restarted, a reload)
    ├── PermissionDeniedError  a restricted Triton API (model control, shared memory...) without the admin key
    ├── BatchTooLargeError a request of more rows than the model's max_batch_size (not retried as it was sent)
    ├── ContextLengthError a prompt (with the tokens asked for) longer than the LLM's max_input_len / max_seq_len
    └── BenchError         a benchmark could not run: server or model not there (tritonforge.bench)
        └── BenchOptionsError  an option or data file refused before any inference (also an InvalidInputError)

Each ClientError subclass is decided once, where the failure is seen (tritonforge.triton.errors for Triton's
answers, the clients' argument checks for InvalidInputError); callers such as the gateway choose by class, never by
reading the message.

Messages name the file or field, the bad value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class TritonForgeError(Exception):
    """Root of every error raised on purpose by tritonforge."""


@dataclass(frozen=True)
class Problem:
    """One finding: where (a field path or a file path) and what is wrong."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class _ProblemsError(TritonForgeError):
    """An error that carries every problem found, not just the first."""

    headline = "problems found"

    def __init__(self, problems: Iterable[Problem], headline: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if headline:
            self.headline = headline
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{self.headline} ({len(self.problems)}):\n{lines}")


class SpecError(_ProblemsError):
    headline = "invalid deployment spec"


class BuildError(TritonForgeError):
    pass


class ParityError(BuildError):
    pass


class QuantizationGateError(BuildError):
    """A reduced-precision model failed its quality gate; ``problems`` are the figures against their thresholds
    (the same words whether the model was just measured or its recorded figures were read from the cache)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems) + "; pass force=True to accept it")


class OutputFileError(TritonForgeError):
    """A result file could not be written (a full disk, a read-only folder): the figures were printed, not saved."""


class RepositoryError(TritonForgeError):
    pass


class ValidationError(_ProblemsError, RepositoryError):
    headline = "model repository is invalid"


class ReleaseError(RepositoryError):
    pass


class ReleaseInterrupted(ReleaseError):
    """A stop signal (``signum``) came while Triton loaded a promoted version; it was held until the load finished
    and the repository agreed with the server. ``change`` is the completed change, or None when the load failed and
    the previous version was put back. The command line exits as the signal asked (128 + ``signum``)."""

    def __init__(self, message: str, *, signum: int, change: object | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.change = change


class ServerError(TritonForgeError):
    pass


class DeployError(_ProblemsError):
    """Cluster deployment (manifests, Helm, KServe, push) refused its inputs; nothing was written or sent."""

    headline = "cannot deploy"

    def __init__(self, problems: Iterable[Problem] | str, headline: str | None = None) -> None:
        super().__init__([Problem("", problems)] if isinstance(problems, str) else problems, headline)


class ClientError(TritonForgeError):
    """A call to Triton failed. Errors from Triton's answer carry ``reason`` (the server's own words), ``model``,
    ``status`` (the gRPC code as tritonclient gives it, e.g. ``StatusCode.NOT_FOUND``, or the HTTP status) and
    ``url``; an error raised before anything was sent (bad input, a closed client) has them None."""

    reason: str | None = None
    model: str | None = None
    status: str | None = None
    url: str | None = None


class InvalidInputError(ClientError, ValueError):
    """An argument the client refused before sending anything; the message names it and what is allowed."""


class TransientError(ClientError):
    pass


class OverloadedError(ClientError):
    pass


class DeadlineExceededError(ClientError):
    """The call's deadline passed. Not retried: the request may be running, or have run, on the server."""


class ModelNotFoundError(ClientError):
    """Triton has no such model (or version) loaded: not in the repository, unloaded, or failed to load."""


class PermissionDeniedError(ClientError):
    """Triton refused a call to an API it restricts (model load/unload, shared memory, logging, trace): the admin
    key is missing or wrong. Not retried: sending it again without the key changes nothing."""


class ModelNotReadyError(ClientError):
    """Triton has the model but it cannot serve right now: a python backend stub died and is being restarted, or
    the model is reloading. Worth retrying after a few seconds."""


class InternalServerError(ClientError):
    """Triton or a model failed on its side (Triton's INTERNAL or UNKNOWN status, HTTP 500): a step's own fault,
    not the request's. Not retried by the client: the request may have run, and a step's bug fails it again."""


class BatchTooLargeError(ClientError):
    """Triton refused a request of more rows than the model's max_batch_size: split it (the message names the
    limit), or read the limit again if the model was reloaded with a smaller one."""


class ContextLengthError(ClientError):
    """The LLM refused a prompt that, with the tokens asked for, does not fit its context (max_input_len,
    max_seq_len; the message has the counts): shorten the prompt or ask for fewer tokens. Not retried.

    The counts the engine's words gave, None where they gave none: ``prompt_tokens``, ``output_tokens`` (the
    tokens asked for) and ``limit``, with ``limit_name`` the engine's name for it (max_seq_len, max_input_len,
    max_num_tokens)."""

    prompt_tokens: int | None = None
    output_tokens: int | None = None
    limit: int | None = None
    limit_name: str | None = None


class BenchError(ClientError):
    """A benchmark that cannot run: the server cannot be reached, or the model is unknown or not ready (the
    client's own classified error, when there is one, is the ``__cause__``). Bad options and data are the subclass
    BenchOptionsError."""


class BenchOptionsError(BenchError, InvalidInputError):
    """A benchmark refused before any inference request: an option or a data file that cannot be used, or one the
    model's config rules out (the message names it and what is allowed). Also an InvalidInputError and a ValueError,
    like every argument the clients refuse."""


class OptionError(TritonForgeError, ValueError):
    """An option or argument that cannot be used, refused before any work; the message names it and what is
    allowed."""


class SplitConfigError(TritonForgeError, ValueError):
    """A split configuration that cannot be used; ``problems`` lists every ``path: message``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"{source}: invalid split configuration ({len(self.problems)} problem"
            f"{'s' * (len(self.problems) != 1)}):\n{lines}"
        )


def unreadable(err: OSError | UnicodeDecodeError) -> str:
    """Why a file the user named cannot be read, in words, for the caller's own error class ("<path>: <reason>")."""
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(err, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(err, FileNotFoundError):
        return "no such file"
    return f"cannot be read: {err.strerror or err}"
