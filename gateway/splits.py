"""A/B tests and canaries for the gateway: a logical model name that splits traffic between arms by weight.

    # splits.yaml  (tritonforge gateway --splits splits.yaml)
    splits:
      chat-canary:                       # the model name clients send
        control:   {model: chat, adapter: support, weight: 90}
        treatment: {model: chat, adapter: legal, weight: 10}     # or `treatments: [ ... ]` for several
        sticky: true                     # same user -> same arm (the OpenAI `user` field, else the API key)
        guard: {max_error_rate: 0.2, window: 50, min_requests: 20}

An arm is a model id the gateway already serves (chat, embeddings or rerank; every arm of a split the same kind),
optionally pinned to a Triton ``version`` and, for chat, a LoRA ``adapter``. Weights are relative (90/10 and
0.9/0.1 are the same split); a weight of 0 takes an arm out of rotation.

Choosing: without ``sticky`` each request draws an arm at random by weight. With ``sticky`` the arm is a pure
function of the split name and the caller's identity (sha256 of both, mod 10000, against the cumulative weights),
so a user keeps their arm while the weights stay put, and moving weight only moves the users in the slice that
changed hands. A sticky request that carries no identity is drawn at random.

Guard: each treatment arm keeps the outcomes of its last ``window`` requests; once it has ``min_requests`` of them
and the share of errors is above ``max_error_rate``, the split *trips*: every request goes to the control arm until
the split's configuration changes (or ``reset`` is called). ``guard: null`` switches the guard off. An error is a
request the arm failed: a 5xx, or a call Triton failed or rejected; requests the gateway refuses before routing
(bad JSON, wrong types, ...) are not counted against any arm, nor is an outage both arms share (a treatment's 503
when the control arm runs on the same Triton model, or had a 503 of its own within OUTAGE_SECONDS).

Reloading: :class:`SplitRouter` re-reads its file when the file's modification time changes (checked at most once
per ``check_interval`` seconds, on the request path: one ``stat``), or takes a new configuration through
:meth:`SplitRouter.replace` (the gateway's ``PUT /admin/splits``). A configuration that does not parse or validate
is refused with every problem listed, and the previous one keeps serving. Splits whose definition is unchanged keep
their counters and guard state; a changed or new split starts fresh (this is how a tripped guard is reset).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

__all__ = [
    "ArmSpec",
    "Choice",
    "GuardSpec",
    "SplitConfigError",
    "SplitRouter",
    "SplitSpec",
    "SplitState",
    "SplitsConfig",
    "bucket_of",
    "load_splits",
    "parse_splits",
]

from tritonforge.errors import SplitConfigError, unreadable
from tritonforge.gateway.file_watch import FileState, FileWatch
from tritonforge.spec_errors import did_you_mean
from tritonforge.values import is_real
from tritonforge.yaml_text import load_yaml

LOG = logging.getLogger(__name__)
BUCKETS = 10_000  # sticky assignment resolution: 0.01 % of traffic
OUTAGE_SECONDS = 10.0  # a treatment's 503 this soon after the control's is an outage they share
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


# ------------------------------------------------------------------------------------------------ configuration


class ArmSpec(BaseModel):
    """One arm: a gateway model id, optionally a Triton model version and a LoRA adapter, and a weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME, max_length=64)
    model: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1, le=2**63 - 1)  # Triton's versions are int64
    adapter: str | None = Field(default=None, min_length=1)
    weight: float = Field(ge=0, allow_inf_nan=False)

    @field_validator("version", mode="before")
    @classmethod
    def _no_bool_version(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be an integer Triton model version >= 1, got {value!r}")
        return value

    @field_validator("weight", mode="before")
    @classmethod
    def _no_bool_weight(cls, value: Any) -> Any:
        if not is_real(value, finite=False):  # NaN and inf go on to the field's allow_inf_nan=False, in its words
            raise ValueError(f"must be a number >= 0, got {value!r}")
        return value

    @property
    def triton_version(self) -> str:
        """The version as Triton's requests carry it ("" = the model's version policy decides)."""
        return "" if self.version is None else str(self.version)


class GuardSpec(BaseModel):
    """Trip the split (all traffic to control) when a treatment's recent error rate is above ``max_error_rate``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_error_rate: float = Field(default=0.2, gt=0, lt=1, allow_inf_nan=False)
    window: int = Field(default=50, ge=1, le=100_000, strict=True)
    min_requests: int = Field(default=20, ge=1, strict=True)

    @model_validator(mode="after")
    def _min_within_window(self) -> GuardSpec:
        if self.min_requests > self.window:
            raise ValueError(f"min_requests ({self.min_requests}) must be <= window ({self.window})")
        return self


class SplitSpec(BaseModel):
    """A logical model name: a control arm, one or more treatment arms, stickiness and a guard."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    control: ArmSpec
    treatments: tuple[ArmSpec, ...] = Field(min_length=1)
    sticky: bool = Field(default=False, strict=True)
    guard: GuardSpec | None = GuardSpec()

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if "treatment" in data:
            if "treatments" in data:
                raise ValueError("give either 'treatment' (one arm) or 'treatments' (a list), not both")
            data["treatments"] = [data.pop("treatment")]
        if isinstance(data.get("control"), Mapping):
            data["control"] = {"name": "control", **data["control"]}
        treatments = data.get("treatments")
        if isinstance(treatments, (list, tuple)):
            single = len(treatments) == 1
            data["treatments"] = [
                {"name": "treatment" if single else f"treatment{i + 1}", **t} if isinstance(t, Mapping) else t
                for i, t in enumerate(treatments)
            ]
        return data

    @model_validator(mode="after")
    def _arms(self) -> SplitSpec:
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique, {', '.join(repr(d) for d in dupes)} repeats")
        if sum(a.weight for a in self.arms) <= 0:
            raise ValueError("the weights add up to 0: at least one arm needs a weight > 0")
        return self

    @property
    def arms(self) -> tuple[ArmSpec, ...]:
        return (self.control, *self.treatments)


class SplitsConfig(BaseModel):
    """The whole file: ``{"splits": {name: SplitSpec}}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    splits: dict[str, SplitSpec] = Field(default_factory=dict)

    @field_validator("splits")
    @classmethod
    def _names(cls, value: dict[str, SplitSpec]) -> dict[str, SplitSpec]:
        import re

        for name in value:
            if not re.fullmatch(_NAME, name) or len(name) > 128:
                raise ValueError(f"split name {name!r} must match {_NAME} (at most 128 characters)")
        return value


def _problems(err: PydanticValidationError) -> list[str]:
    out = []
    errors = err.errors()
    nested = {tuple(e.get("loc", ()))[:i] for e in errors for i in range(len(e.get("loc", ())))}
    for e in errors:
        if e.get("type") == "too_short" and tuple(e.get("loc", ())) in nested:
            continue  # a list whose items failed also reports itself as too short: the items say why
        loc = tuple(e.get("loc", ()))
        # written as split_problems writes its paths (treatments[0]), which the two kinds of problem share a list with
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).removeprefix(".")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":  # a misspelt key: its near miss (treatmnt -> treatment)
            msg = "unknown field" + did_you_mean(SplitsConfig, loc)
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) or e.get("type") == "missing" else f" (got {got!r})"
        out.append(f"{path or '(top level)'}: {msg}{shown}")
    return out


def parse_splits(data: Any, source: str = "splits") -> SplitsConfig:
    """A :class:`SplitsConfig` from parsed YAML/JSON (``None`` or ``{}``: no splits); SplitConfigError otherwise."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise SplitConfigError(source, [f"(top level): must be a mapping with a 'splits' key, got {got}"])
    try:
        return SplitsConfig.model_validate(data)
    except PydanticValidationError as err:
        raise SplitConfigError(source, _problems(err)) from None


def load_splits(path: str | Path) -> SplitsConfig:
    """Read a YAML (or JSON) split file."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SplitConfigError(str(p), [unreadable(err)]) from None
    if not text.strip():  # what a reader sees while `cat > file` or open("w") rewrites it: not "no splits"
        raise SplitConfigError(str(p), ["the file is empty (to remove every split, write `splits: {}`)"])
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else load_yaml(text, str(p))
    except (ValueError, yaml.YAMLError) as err:
        what = "JSON" if p.suffix.lower() == ".json" else "YAML"
        raise SplitConfigError(str(p), [f"not valid {what}: {err}"]) from None
    return parse_splits(data, str(p))


def bucket_of(split: str, identity: str) -> int:
    """The sticky bucket (0..9999) of ``identity`` in ``split``."""
    digest = hashlib.sha256(f"{split}\x00{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


# ------------------------------------------------------------------------------------------------------ runtime


@dataclass
class ArmState:
    spec: ArmSpec
    control: bool
    window: deque[bool]  # True = error, the last N outcomes (treatment arms)
    requests: int = 0
    errors: int = 0

    def error_rate(self) -> float | None:
        return sum(self.window) / len(self.window) if self.window else None


@dataclass(frozen=True)
class Choice:
    """The arm a request goes to."""

    split: SplitState
    arm: ArmSpec
    control: bool
    reason: str  # "weighted", "sticky", "tripped"


@dataclass
class SplitState:
    """A split's live state: per-arm counters, the treatments' recent outcomes and the guard."""

    name: str
    spec: SplitSpec
    loaded_at: float = field(default_factory=time.time)
    tripped: bool = False
    tripped_reason: str | None = None
    tripped_at: float | None = None
    arms: dict[str, ArmState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _control_unavailable_at: float = field(default=-math.inf, repr=False)  # monotonic time of its last 503
    _tripped_by_outage_at: float = field(default=-math.inf, repr=False)  # when 503s tripped it (-inf: they did not)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        size = self.spec.guard.window if self.spec.guard else 1
        for arm in self.spec.arms:
            self.arms[arm.name] = ArmState(arm, arm is self.spec.control, deque(maxlen=size))
        total = sum(a.weight for a in self.spec.arms)
        edges, acc = [], 0.0
        for arm in self.spec.arms:
            acc += arm.weight
            edges.append(acc / total)
        self._edges = edges

    def _pick(self, point: float) -> ArmSpec:
        """The arm whose cumulative weight slice holds ``point`` in [0, 1)."""
        for arm, edge in zip(self.spec.arms, self._edges, strict=True):
            if point < edge and arm.weight > 0:
                return arm
        return next(a for a in reversed(self.spec.arms) if a.weight > 0)

    def choose(self, identity: str | None, rng: random.Random) -> Choice:
        if self.tripped:
            return Choice(self, self.spec.control, True, "tripped")
        if self.spec.sticky and identity:
            arm, reason = self._pick(bucket_of(self.name, identity) / BUCKETS), "sticky"
        else:
            arm, reason = self._pick(rng.random()), "weighted"
        return Choice(self, arm, arm is self.spec.control, reason)

    def record(self, arm_name: str, error: bool, *, unavailable: bool = False) -> bool:
        """Count one finished request; True when this outcome tripped the guard.

        ``unavailable``: it failed because a model could not serve (503: a stub being healed, a model reloading,
        Triton unreachable). An outage both arms share says nothing about the treatment, and it tripped the guard
        and ended the A/B test (found by the LLM soak audit: a killed engine stub, 20 of 20 treatment failures). So
        a treatment's 503 does not count when the control arm is served by the same Triton model and version (an
        adapter split: one engine) or had a 503 of its own in the last OUTAGE_SECONDS; and when the control has a
        503 within OUTAGE_SECONDS of a trip that 503s made, the trip is undone and the guard starts over. A canary
        failing alone still trips at once: the control keeps serving, and its trip stands.
        """
        with self._lock:
            arm = self.arms.get(arm_name)
            if arm is None:
                return False
            arm.requests += 1
            arm.errors += int(error)
            now = self.clock()
            if arm.control:
                if unavailable:
                    self._control_unavailable_at = now
                    self._shared_outage(now)
                return False
            if self.spec.guard is None:
                return False
            control = self.spec.control
            if error and unavailable and (
                (arm.spec.model, arm.spec.version) == (control.model, control.version)
                or now - self._control_unavailable_at < OUTAGE_SECONDS
            ):
                return False
            tripped = self._judge(arm_name, error)
            if tripped:
                self._tripped_by_outage_at = now if unavailable else -math.inf
        if tripped:
            LOG.warning("split '%s' tripped: %s", self.name, self.tripped_reason)
        return tripped

    def _shared_outage(self, now: float) -> None:
        """The control could not serve either: what the treatments' windows hold of the last moments may be the
        same outage, so the guard starts over, and a trip 503s made just before is undone (lock held)."""
        for state in self.arms.values():
            if not state.control:
                state.window.clear()
        if self.tripped and now - self._tripped_by_outage_at < OUTAGE_SECONDS:
            self.tripped, self.tripped_reason, self.tripped_at = False, None, None
            LOG.warning("split '%s' untripped: the control arm failed alike (an outage both arms share)", self.name)

    def _judge(self, arm_name: str, error: bool) -> bool:
        """One outcome into a treatment's window; True when it trips the guard (lock held)."""
        guard = self.spec.guard
        arm = self.arms[arm_name]
        if guard is None:
            return False
        arm.window.append(error)
        if self.tripped or len(arm.window) < guard.min_requests:
            return False
        rate = sum(arm.window) / len(arm.window)
        if rate <= guard.max_error_rate:
            return False
        self.tripped, self.tripped_at = True, time.time()
        self.tripped_reason = (
            f"arm '{arm_name}' failed {sum(arm.window)} of its last {len(arm.window)} requests "
            f"({rate:.0%} > max_error_rate {guard.max_error_rate:.0%}); all traffic goes to "
            f"'{self.spec.control.name}'"
        )
        return True

    def reset(self) -> None:
        with self._lock:
            self.tripped, self.tripped_reason, self.tripped_at = False, None, None
            for arm in self.arms.values():
                arm.window.clear()

    def effective_weights(self) -> dict[str, float]:
        """Each arm's share of new traffic now (control 1.0 when tripped)."""
        if self.tripped:
            return {a.name: float(a is self.spec.control) for a in self.spec.arms}
        total = sum(a.weight for a in self.spec.arms)
        return {a.name: a.weight / total for a in self.spec.arms}

    def status(self) -> dict[str, Any]:
        with self._lock:
            shares = self.effective_weights()
            arms = {
                name: {
                    "model": a.spec.model,
                    "version": a.spec.version,
                    "adapter": a.spec.adapter,
                    "weight": a.spec.weight,
                    "share": shares[name],
                    "control": a.control,
                    "requests": a.requests,
                    "errors": a.errors,
                    "window_error_rate": None if a.control else a.error_rate(),
                    "window_requests": None if a.control else len(a.window),
                }
                for name, a in self.arms.items()
            }
            return {
                "sticky": self.spec.sticky,
                "guard": None if self.spec.guard is None else self.spec.guard.model_dump(),
                "tripped": self.tripped,
                "tripped_reason": self.tripped_reason,
                "tripped_at": self.tripped_at,
                "loaded_at": self.loaded_at,
                "arms": arms,
            }


Validator = Callable[[SplitsConfig], list[str]]


class SplitRouter:
    """The live splits: choose an arm per request, record outcomes, reload the configuration without a restart.

    ``path``: a YAML/JSON file, read now (a bad file raises SplitConfigError) and re-read when it changes.
    ``config``: a configuration given directly (no file). ``validate``: extra checks against what serves the
    arms (the gateway checks that arm models exist and agree in kind); returns ``path: message`` problems.
    """

    def __init__(
        self,
        config: SplitsConfig | None = None,
        *,
        path: str | Path | None = None,
        validate: Validator | None = None,
        rng: random.Random | None = None,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config is not None and path is not None:
            raise ValueError("give a split configuration or a file to read it from, not both")
        self.path = Path(path) if path is not None else None
        self.validate = validate
        self.rng = rng or random.Random()
        self.check_interval = check_interval
        self.clock = clock
        self._lock = threading.RLock()
        self._splits: dict[str, SplitState] = {}
        self._watch = (
            None if self.path is None
            else FileWatch(self.path, self._file_changed, interval=check_interval, clock=clock)
        )
        self.source = "(none)"
        self.last_error: str | None = None
        self.reloads = 0
        self.rejected = 0
        if self.path is not None:
            self.reload()
        else:
            self.replace(config or SplitsConfig(), source="(given)")

    # ------------------------------------------------------------------------------------------ configuration

    @property
    def config(self) -> SplitsConfig:
        with self._lock:
            return SplitsConfig(splits={n: s.spec for n, s in self._splits.items()})

    def replace(self, config: SplitsConfig, *, source: str = "(api)") -> list[str]:
        """Validate and swap in ``config``; returns the names of the splits that (re)started. Raises
        SplitConfigError (the current configuration keeps serving)."""
        problems = self.validate(config) if self.validate is not None else []
        if problems:
            with self._lock:
                self.rejected += 1
                self.last_error = str(SplitConfigError(source, problems))
            raise SplitConfigError(source, problems)
        with self._lock:
            fresh: dict[str, SplitState] = {}
            started = []
            for name, spec in config.splits.items():
                old = self._splits.get(name)
                if old is not None and old.spec == spec:
                    fresh[name] = old
                else:
                    fresh[name] = SplitState(name, spec, clock=self.clock)
                    started.append(name)
            self._splits = fresh
            self.source = source
            self.last_error = None
            self.reloads += 1
        if started:
            LOG.info("splits from %s: %s (new or changed: %s)", source, ", ".join(fresh) or "none", ", ".join(started))
        return started

    def reload(self) -> list[str]:
        """Re-read the file now (SplitConfigError if it is bad: the current configuration keeps serving)."""
        if self.path is None:
            raise ValueError("this router has no file to reload")
        with self._lock:
            assert self._watch is not None
            self._watch.take()
            try:
                config = load_splits(self.path)
            except SplitConfigError as err:
                self.rejected += 1
                self.last_error = str(err)
                raise
            return self.replace(config, source=str(self.path))

    def maybe_reload(self) -> None:
        """Re-read the file if it changed (at most one ``stat`` per ``check_interval``); a bad file is logged."""
        if self._watch is not None:
            self._watch.poll()

    def _file_changed(self, _state: FileState | None) -> bool:
        try:
            self.reload()  # a file that is gone is an error too: logged, and the splits it held keep serving
        except SplitConfigError as err:
            LOG.error("keeping the previous splits: %s", err)
        return True  # taken either way: a bad file is not read again until it changes

    # ------------------------------------------------------------------------------------------------ routing

    def names(self) -> list[str]:
        self.maybe_reload()
        with self._lock:
            return list(self._splits)

    def get(self, name: str) -> SplitState | None:
        self.maybe_reload()
        with self._lock:
            return self._splits.get(name)

    def choose(self, name: str, identity: str | None = None) -> Choice | None:
        """The arm for one request to split ``name`` (None: no such split)."""
        state = self.get(name)
        return None if state is None else state.choose(identity, self.rng)

    def reset(self, name: str) -> bool:
        state = self.get(name)
        if state is None:
            return False
        state.reset()
        return True

    def states(self) -> list[SplitState]:
        self.maybe_reload()
        with self._lock:
            return list(self._splits.values())

    def status(self) -> dict[str, Any]:
        self.maybe_reload()
        with self._lock:
            states = list(self._splits.values())
            meta = {
                "source": self.source,
                "last_error": self.last_error,
                "reloads": self.reloads,
                "rejected": self.rejected,
            }
        return {**meta, "splits": {s.name: s.status() for s in states}}
