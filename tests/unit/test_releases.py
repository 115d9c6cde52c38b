"""Releases without a server: versions on disk, the config rewrite, history, refusals, the CLI."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path

import pytest
from release_support import scorer_repo
from typer.testing import CliRunner

from tritonforge.cli import app
from tritonforge.config_io import read_config
from tritonforge.errors import ReleaseError, ReleaseInterrupted
from tritonforge.releases import (
    LOCK_FILE,
    RELEASES_FILE,
    add_versions,
    ensemble_changes,
    list_releases,
    model_releases,
    pin,
    promote,
    rollback,
    serving_versions,
    unpin,
)


def _repo(root: Path, weights: bytes, *, mbs: int = 8) -> Path:
    """`scorer` version 1 (a model.py beside its weights) and an ensemble `pipeline` that must never be added."""
    return scorer_repo(root, {1: weights + b"\x01"}, max_batch_size=mbs, model_py=True, pipeline=True)


@pytest.fixture()
def repos(tmp_path: Path) -> tuple[Path, Path]:
    return _repo(tmp_path / "serving", b"old"), _repo(tmp_path / "new", b"new")


class Recorder:
    """A stand-in for the running Triton: records loads, and fails those of a chosen version."""

    def __init__(self, repo: Path, fail_version: int | None = None) -> None:
        self.repo, self.fail_version, self.loads = repo, fail_version, []

    def load(self, model: str) -> None:
        versions = list(read_config(self.repo / model / "config.pbtxt").version_policy.specific.versions)
        self.loads.append((model, versions))
        if self.fail_version in versions:
            raise ReleaseError(f"failed to load '{model}' version {self.fail_version}: bad weights")


def test_latest_is_the_default_policy_and_specific_is_read(repos: tuple[Path, Path]) -> None:
    serving, _ = repos
    config = read_config(serving / "scorer" / "config.pbtxt")
    assert serving_versions(config, [1, 2, 3]) == [3]
    config.version_policy.specific.versions.extend([1, 2])
    assert serving_versions(config, [1, 2, 3]) == [1, 2]
    config.version_policy.Clear()
    config.version_policy.all.SetInParent()
    assert serving_versions(config, [1, 2]) == [1, 2]


def test_add_versions_adds_the_next_number_without_changing_what_serves(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    assert add_versions(serving, new, evaluation={"ndcg@10": 0.71}, dataset_sha256="d" * 64) == {"scorer": 2}
    state = model_releases(serving, "scorer")
    assert [v.version for v in state.versions] == [1, 2]
    assert state.active == (1,), "a new version serves only once promoted"
    assert list(read_config(serving / "scorer" / "config.pbtxt").version_policy.specific.versions) == [1]
    assert (serving / "scorer" / "2" / "weights.bin").read_bytes() == b"new\x01"
    lineage = json.loads((serving / "scorer" / "2" / "lineage.json").read_text())
    assert lineage["release"]["version"] == 2
    assert lineage["release"]["evaluation"] == {"ndcg@10": 0.71}
    assert lineage["release"]["dataset_sha256"] == "d" * 64
    assert not [p for p in (serving / "scorer").iterdir() if p.name.startswith(".staging")]
    # the same files again: nothing to add (content-hash aware), the ensemble is never added
    promote(serving, "scorer", 2)
    assert add_versions(serving, new) == {}


def test_add_skips_a_served_version_whose_only_difference_is_python_bytecode(tmp_path: Path) -> None:
    """Triton's python backend writes __pycache__ into a served version folder: not a change of what serves."""
    serving, new = _repo(tmp_path / "serving", b"same"), _repo(tmp_path / "new", b"same")
    (serving / "scorer" / "1" / "__pycache__").mkdir()
    (serving / "scorer" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"bytecode")
    assert add_versions(serving, new) == {}


def test_add_refuses_a_changed_config_and_unknown_models(tmp_path: Path) -> None:
    serving = _repo(tmp_path / "serving", b"old")
    changed = _repo(tmp_path / "changed", b"new", mbs=16)
    with pytest.raises(ReleaseError, match=r"scorer: the new build's config.pbtxt differs .*max_batch_size: 16"):
        add_versions(serving, changed)
    with pytest.raises(ReleaseError, match="nope: not a model of the source repository"):
        add_versions(serving, changed, ["nope"])
    assert [v.version for v in model_releases(serving, "scorer").versions] == [1]


def test_add_refuses_a_version_that_moves_an_adapters_task_id(repos: tuple[Path, Path]) -> None:
    """A repository built when adapters were numbered 1..N, and a new build with one adapter more: promoted one model
    at a time, requests for 'support' reached 'legal''s weights (operations audit). New adapters are fine."""
    serving, new = repos

    def table(folder: Path, ids: dict[str, int]) -> None:
        adapters = {name: {"lora_task_id": i, "path": f"adapters/{name}"} for name, i in ids.items()}
        (folder / "adapters.json").write_text(json.dumps({"adapters": adapters}))

    table(serving / "scorer" / "1", {"support": 1})
    table(new / "scorer" / "1", {"legal": 1, "support": 2})
    with pytest.raises(ReleaseError, match=r"scorer: the new version numbers adapters differently from version 1, "
                                           r"which serves \(lora_task_id 'support' 1 -> 2;"):
        add_versions(serving, new)
    assert [v.version for v in model_releases(serving, "scorer").versions] == [1]
    table(new / "scorer" / "1", {"legal": 7, "support": 1})  # ids that follow the names: an adapter added
    assert add_versions(serving, new) == {"scorer": 2}


def test_add_refuses_a_source_version_cut_short(repos: tuple[Path, Path]) -> None:
    """A source copied in part (an interrupted rsync) was added and caught only when Triton loaded it (operations
    audit): the file sizes its build recorded in lineage.json are checked first."""
    from tritonforge.lineage import LINEAGE_FILE, lineage_bytes, record_files

    serving, new = repos
    version = new / "scorer" / "1"
    (version / LINEAGE_FILE).write_bytes(lineage_bytes({"spec": "s"}))
    record_files(version)
    (version / "weights.bin").write_bytes(b"ne")
    with pytest.raises(ReleaseError, match=r"scorer: version 1 of the source is not what its build wrote "
                                           r"\(weights\.bin is 2 bytes, the build wrote 4\): a copy cut short\?"):
        add_versions(serving, new)
    assert [v.version for v in model_releases(serving, "scorer").versions] == [1]


def test_promote_rollback_history(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    control = Recorder(serving)
    change = promote(serving, "scorer", 2, control=control)
    assert (change.version, change.previous, change.applied) == (2, (1,), True)
    assert control.loads == [("scorer", [2])]
    assert model_releases(serving, "scorer").previous == 1
    assert rollback(serving, "scorer", control=control).version == 1
    assert model_releases(serving, "scorer").active == (1,)
    with pytest.raises(ReleaseError, match="no earlier promoted version"):
        rollback(serving, "scorer")
    history = json.loads((serving / RELEASES_FILE).read_text())["models"]["scorer"]["history"]
    assert [e["action"] for e in history] == ["initial", "add", "promote", "rollback"]


def test_a_failed_load_restores_the_config_and_names_what_still_serves(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    before = (serving / "scorer" / "config.pbtxt").read_bytes()
    control = Recorder(serving, fail_version=2)
    with pytest.raises(ReleaseError, match=r"version 2 of scorer failed to load.*version 1 still serves.*bad weights"):
        promote(serving, "scorer", 2, control=control)
    assert (serving / "scorer" / "config.pbtxt").read_bytes() == before
    assert control.loads == [("scorer", [2]), ("scorer", [1])]  # told to reload the restored config
    assert model_releases(serving, "scorer").active == (1,)
    with pytest.raises(ReleaseError, match=r"scorer has no version 7 \(versions: 1, 2\)"):
        promote(serving, "scorer", 7)
    with pytest.raises(ReleaseError, match=r"'missing' is not a model of .* \(models: pipeline, scorer\)"):
        promote(serving, "missing", 1)


def test_pin_and_unpin(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    assert pin(serving, "scorer", 2).version == 2
    assert model_releases(serving, "scorer").active == (2,)
    assert model_releases(serving, "scorer").pinned == 2
    with pytest.raises(ReleaseError, match="pinned to version 2"):
        promote(serving, "scorer", 1)
    with pytest.raises(ReleaseError, match="pinned to version 2"):
        rollback(serving, "scorer")
    unpin(serving, "scorer")
    with pytest.raises(ReleaseError, match="not pinned"):
        unpin(serving, "scorer")
    assert rollback(serving, "scorer").version == 1


def test_a_concurrent_release_command_is_refused(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    with open(serving / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ReleaseError, match="another release command is changing"):
            promote(serving, "scorer", 2)
    assert model_releases(serving, "scorer").active == (1,)


def test_a_corrupt_history_file_is_named(repos: tuple[Path, Path]) -> None:
    serving, _ = repos
    (serving / RELEASES_FILE).write_text("{not json")
    with pytest.raises(ReleaseError, match=r"releases.json is not valid JSON"):
        list_releases(serving)


def test_cli_add_list_promote_rollback(repos: tuple[Path, Path], tmp_path: Path) -> None:
    serving, new = repos
    scores = tmp_path / "eval.json"
    scores.write_text('{"accuracy": 0.93}')
    runner = CliRunner()
    result = runner.invoke(app, ["release", "add", "--repo", str(serving), "--from", str(new), "--eval", str(scores)])
    assert result.exit_code == 0, result.output
    assert "added scorer version 2" in result.output
    result = runner.invoke(app, ["release", "promote", "scorer", "2", "--repo", str(serving)])
    assert result.exit_code == 0, result.output
    assert "promote scorer: version 2 (was 1)" in result.output and "files only" in result.output
    result = runner.invoke(app, ["release", "list", "--repo", str(serving)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    result = runner.invoke(app, ["release", "rollback", "scorer", "--repo", str(serving)])
    assert result.exit_code == 0 and "rollback scorer: version 1 (was 2)" in result.output
    result = runner.invoke(app, ["release", "promote", "scorer", "5", "--repo", str(serving)])
    assert result.exit_code == 1 and "scorer has no version 5" in result.output


def test_an_ensemble_whose_config_changed_is_named_not_passed_over_in_silence(repos: tuple[Path, Path]) -> None:
    """A newer build's chat ensemble listing a new adapter was skipped, and a second add said "nothing to add:
    every model's files equal what serves" (day-two audit)."""
    serving, new = repos
    ensemble = new / "pipeline" / "config.pbtxt"
    ensemble.write_text(ensemble.read_text() + 'parameters { key: "lora_adapters" value { string_value: "a,b" } }\n')
    before = (serving / "pipeline" / "config.pbtxt").read_bytes()
    runner = CliRunner()
    args = ["release", "add", "--repo", str(serving), "--from", str(new)]
    for expected in ("added scorer version 2", "nothing to add: every model's files equal what serves; an ensemble's "
                     "config differs, which a release does not change (below)"):
        result = runner.invoke(app, args, env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        output = " ".join(result.output.split())
        assert expected in output
        assert "not added: pipeline is an ensemble, and its config.pbtxt in" in output
        assert "differs from the serving one: parameters['lora_adapters'] added ('a,b'). An ensemble" in output
        assert f"copy {new}/pipeline/config.pbtxt over {serving}/pipeline/config.pbtxt" in output
        if "added" in expected:
            promote(serving, "scorer", 2)  # the new scorer serves: only the ensemble differs now
    assert list(ensemble_changes(serving, new)) == ["pipeline"]
    assert ensemble_changes(serving, new, ["scorer"]) == {}
    with pytest.raises(ReleaseError, match=r"pipeline is an ensemble, and its config.pbtxt .* differs"):
        add_versions(serving, new, ["pipeline"])
    assert (serving / "pipeline" / "config.pbtxt").read_bytes() == before
    assert sorted(p.name for p in (serving / "pipeline").iterdir()) == ["1", "config.pbtxt"]
    ensemble.write_bytes(before)
    with pytest.raises(ReleaseError, match=r"pipeline is an ensemble whose config equals the serving one"):
        add_versions(serving, new, ["pipeline"])


# ------------------------------------------------------------------------------- integrity (a release audit)


def test_what_release_writes_keeps_the_files_readable_by_another_user(repos: tuple[Path, Path]) -> None:
    """mkstemp made config.pbtxt and releases.json 0600: a Triton running as another user could not read them."""
    serving, new = repos
    config = serving / "scorer" / "config.pbtxt"
    config.chmod(0o644)
    add_versions(serving, new)
    promote(serving, "scorer", 2)
    assert config.stat().st_mode & 0o777 == 0o644
    assert (serving / RELEASES_FILE).stat().st_mode & 0o777 == 0o644


def test_promoting_what_already_serves_leaves_nothing_for_rollback_to_undo(repos: tuple[Path, Path]) -> None:
    """A retried promote recorded a second event, and the next rollback "rolled back" to the same version."""
    serving, new = repos
    add_versions(serving, new)
    promote(serving, "scorer", 2)
    again = promote(serving, "scorer", 2)
    assert again.previous == (2,)
    assert [e["action"] for e in model_releases(serving, "scorer").history] == ["initial", "add", "promote"]
    assert rollback(serving, "scorer").version == 1
    assert model_releases(serving, "scorer").active == (1,)


def test_a_promote_interrupted_while_triton_loads_can_be_rolled_back(repos: tuple[Path, Path]) -> None:
    """The history is written before Triton is asked: a promote that died during the load (SIGKILL; here an
    exception out of the control) left config.pbtxt on the new version with no event, and rollback then refused."""
    serving, new = repos
    add_versions(serving, new)

    class Interrupted(Recorder):
        def load(self, model: str) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        promote(serving, "scorer", 2, control=Interrupted(serving))
    state = model_releases(serving, "scorer")
    assert state.active == (2,) and state.history[-1]["action"] == "promote"
    assert rollback(serving, "scorer").version == 1


class Signalling(Recorder):
    """A control whose load is interrupted by ``signum`` sent to this process (as SIGTERM comes from a supervisor)."""

    def __init__(self, repo: Path, signum: int, fail_version: int | None = None) -> None:
        super().__init__(repo, fail_version)
        self.signum = signum

    def load(self, model: str) -> None:
        if not self.loads:
            os.kill(os.getpid(), self.signum)
            time.sleep(0.05)  # the handler runs here, in the middle of the load
        super().load(model)


def test_a_stop_signal_during_a_failing_load_is_held_until_the_old_config_is_back(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    before = (serving / "scorer" / "config.pbtxt").read_bytes()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    control = Signalling(serving, signal.SIGTERM, fail_version=2)
    with pytest.raises(ReleaseInterrupted, match=r"SIGTERM came while Triton loaded scorer; the load was let finish "
                       r"and the repository put back before stopping: version 2 of scorer failed to load") as caught:
        promote(serving, "scorer", 2, control=control)
    assert caught.value.signum == signal.SIGTERM and caught.value.change is None
    assert control.loads == [("scorer", [2]), ("scorer", [1])]  # the restore ran to its end
    assert (serving / "scorer" / "config.pbtxt").read_bytes() == before
    assert [e["action"] for e in model_releases(serving, "scorer").history] == ["initial", "add"]
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_a_stop_signal_during_a_load_that_succeeds_ends_after_the_promote(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    with pytest.raises(ReleaseInterrupted, match=r"SIGINT came while Triton loaded scorer; .*the promote is complete, "
                       r"version 2 serves \(was 1; Triton serves it\); `tritonforge release rollback scorer`") as caught:
        promote(serving, "scorer", 2, control=Signalling(serving, signal.SIGINT))
    assert caught.value.signum == signal.SIGINT and caught.value.change.version == 2
    assert model_releases(serving, "scorer").active == (2,)
    with pytest.raises(ReleaseInterrupted, match=r"SIGTERM .* the pin is complete, version 1 serves .*`tritonforge release unpin scorer` then"):
        pin(serving, "scorer", 1, control=Signalling(serving, signal.SIGTERM))
    assert model_releases(serving, "scorer").pinned == 1  # the pin was recorded before the command ends


def test_a_failed_load_leaves_config_and_history_as_they_were(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    before = model_releases(serving, "scorer").history
    with pytest.raises(ReleaseError, match="failed to load"):
        promote(serving, "scorer", 2, control=Recorder(serving, fail_version=2))
    state = model_releases(serving, "scorer")
    assert state.active == (1,) and state.history == before


def test_a_history_that_cannot_be_written_leaves_the_config_as_it_was(
    repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: a raw OSError traceback, with config.pbtxt already on the new version and no history."""
    import errno
    import os

    from tritonforge import releases

    serving, new = repos
    add_versions(serving, new)
    config = (serving / "scorer" / "config.pbtxt").read_bytes()
    real_replace = os.replace

    def replace(src: str, dst: str | Path) -> None:
        if Path(dst).name == RELEASES_FILE:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(releases.os, "replace", replace)
    with pytest.raises(ReleaseError, match=r"cannot write .*releases.json \(the previous file is unchanged\): No space left"):
        promote(serving, "scorer", 2, control=Recorder(serving))
    assert (serving / "scorer" / "config.pbtxt").read_bytes() == config
    assert not [p for p in serving.iterdir() if p.name.startswith(f".{RELEASES_FILE}.")]


def test_an_add_killed_mid_copy_leaves_nothing_the_next_add_keeps(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    left = serving / "scorer" / ".staging-killed"
    (left / "sub").mkdir(parents=True)
    assert add_versions(serving, new) == {"scorer": 2}
    assert not left.exists()


def test_a_build_does_not_replace_a_repository_holding_releases(repos: tuple[Path, Path]) -> None:
    """A rebuild into the served repository deleted every added version and releases.json, exit 0."""
    from tritonforge.errors import RepositoryError
    from tritonforge.repository import OUTPUT_MARKER, check_output

    serving, new = repos
    (serving / OUTPUT_MARKER).write_text("")
    check_output(serving)  # an output folder
    add_versions(serving, new)
    with pytest.raises(RepositoryError, match=r"it holds releases \(releases.json\).*tritonforge release add --repo"):
        check_output(serving, replaces_builds=True)
