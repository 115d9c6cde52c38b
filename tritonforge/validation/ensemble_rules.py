"""Triton's ensemble wiring rules, one copy: each rule is a function returning Triton's own message (or None when
the rule holds). The validator applies them to configs on disk (:mod:`.config_rules`, :mod:`.repository_rules`);
the DAG API (:mod:`tritonforge.ensembles.dag`) applies them while an ensemble is written, so a mistake fails at the
line that makes it, in the words Triton would use at load time. Rule labels (R48-R62) are those of the team's
config-rules reference; the code they follow is core's ``ensemble_utils.cc`` and ``model_config_utils.cc``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

WILDCARD = -1


def dims_match(a: Sequence[int], b: Sequence[int]) -> bool:
    """Equal length and every dim equal, -1 matching anything."""
    return len(a) == len(b) and all(x == y or WILDCARD in (x, y) for x, y in zip(a, b, strict=True))


def shape_text(dims: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def tensor_prefix(ensemble: str, tensor: str) -> str:
    return f"in ensemble {ensemble}, ensemble tensor {tensor}: "


def inconsistent_type(prefix: str, known: str, known_model: str, new: str, new_model: str) -> str | None:
    """R60: a tensor has one data type wherever it appears (``known``/``new``: Triton's type names)."""
    if known == new:
        return None
    return f"{prefix}inconsistent data type: {known} is inferred from model {known_model} while {new} is inferred " \
        f"from model {new_model}"


def inconsistent_shape(
    prefix: str,
    known: tuple[Sequence[int], Sequence[int], str],
    new: tuple[Sequence[int], Sequence[int], str],
) -> str | None:
    """R61: shapes agree with -1 wildcards, either as declared or once each side's batch dim is added.
    ``known``/``new``: (dims, dims with the batch dim when batching, model)."""
    (dims_a, full_a, model_a), (dims_b, full_b, model_b) = known, new
    if dims_match(dims_a, dims_b) or dims_match(full_a, full_b):
        return None
    return f"{prefix}inconsistent shape: {shape_text(full_a)} is inferred from model {model_a} while " \
        f"{shape_text(full_b)} is inferred from model {model_b}"


def batch_size_too_small(ensemble: str, ensemble_max: int, model: str, model_max: int) -> str | None:
    """R57: a batching member must allow at least the ensemble's max_batch_size."""
    if model_max == 0 or model_max >= ensemble_max:
        return None
    return f"ensemble {ensemble} allows maximum batch size {ensemble_max}, but it contains model {model} which " \
        f"only allows maximum batch size to be {model_max}"


def non_existing_input(ensemble: str, tensor: str, key: str, model: str) -> str:
    """R58: an input map names an input the model has."""
    return f"in ensemble {ensemble}, ensemble tensor {tensor} is mapping to non-existing input {key} in model {model}"


def unmapped_input(ensemble: str, key: str, model: str) -> str:
    """R58: every non-optional model input is mapped."""
    return f"in ensemble {ensemble}, input {key} in model {model} is not mapped to any ensemble tensors"


def non_existing_output(ensemble: str, tensor: str, key: str, model: str) -> str:
    """R59: an output map names an output the model has."""
    return f"in ensemble {ensemble}, ensemble tensor {tensor} is mapped from non-existing output {key} in model {model}"


def output_mapped_twice(ensemble: str, tensor: str, step: int) -> str:
    """R49: one writer per ensemble tensor."""
    return f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble '{ensemble}' step {step}"


def unused_input(ensemble: str, tensor: str) -> str:
    """R50: every ensemble input feeds a step."""
    return f"ensemble input '{tensor}' for ensemble {ensemble}' is not used"


def unused_output(ensemble: str, tensor: str) -> str:
    """R50: every ensemble output is written by a step."""
    return f"ensemble output '{tensor}' for ensemble {ensemble}' is not used"


def unused_tensor(ensemble: str, tensor: str) -> str:
    """R51: every tensor a step writes is read (or is an ensemble output)."""
    return f"ensemble tensor '{tensor}' is unused in ensemble '{ensemble}'"


def no_steps(ensemble: str) -> str:
    """R48: an ensemble has steps."""
    return f"must specify 'step' for ensemble '{ensemble}'"


STEP_FIELDS = ("model_name", "input_map", "output_map")


def step_missing(ensemble: str, field: str, step: int) -> str:
    """R48: every step names its model and maps at least one input and one output (``field``: one of
    STEP_FIELDS, checked in that order; ``step``: the 0-based index)."""
    return f"must specify '{field}' in step {step} of ensemble '{ensemble}'"


def mixed_decoupled(ensemble: str, model: str) -> str:
    """R62: a step joins tensors from one decoupled origin at most."""
    return f"in ensemble {ensemble}, step of model '{model}' receives inputs originated from different decoupled models"


def circular_dependency(ensemble: str, last: str) -> str:
    """R54: an ensemble that runs itself, through ``last`` (itself, in the shortest cycle)."""
    return f"circular dependency between ensembles: {ensemble} -> ... -> {last} -> {ensemble}"
