"""The stub watchdog's decisions, on a /proc written for the test (the real kill-and-heal runs in
tests/robustness/test_failures.py against tritonserver)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tritonforge import stub_watchdog
from tritonforge.stub_watchdog import StubWatchdog, compile_python_models, python_stubs

SERVER = 4242


def add_process(proc: Path, pid: int, ppid: int, argv: list[str]) -> None:
    folder = proc / str(pid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{pid} (some (odd) name) S {ppid} 1 1 0 -1\n")
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def stub(model: str, instance: str) -> list[str]:
    return ["/x/python/triton_python_backend_stub", f"/repo/{model}/1/model.py", "shm", "1048576", "1048576",
            str(SERVER), "/x/python", "336", instance, "DEFAULT"]


def test_python_stubs_are_read_from_the_servers_children(tmp_path: Path) -> None:
    add_process(tmp_path, 10, SERVER, stub("embed", "embed_0_0"))
    add_process(tmp_path, 11, SERVER, stub("minilm_encoder", "minilm_encoder_0_1"))
    add_process(tmp_path, 12, 1, stub("other", "other_0_0"))  # another server's
    add_process(tmp_path, 13, SERVER, ["/bin/sh", "-c", "true"])  # not a stub
    (tmp_path / "self").mkdir()
    assert python_stubs(SERVER, tmp_path) == {"embed_0_0": "embed", "minilm_encoder_0_1": "minilm_encoder"}


class Fake:
    def __init__(self) -> None:
        self.stubs = {"a_0_0": "a", "b_0_0": "b"}
        self.ready = {"a": True, "b": True}
        self.reloads: list[str] = []
        self.fail = 0

    def reload(self, model: str) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("load failed")
        self.reloads.append(model)
        self.stubs[f"{model}_0_0"] = model


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Fake:
    f = Fake()
    monkeypatch.setattr(stub_watchdog, "stub_processes", lambda pid: {i: (m, None) for i, m in f.stubs.items()})
    return f


def dog(fake: Fake) -> StubWatchdog:
    return StubWatchdog(pid=lambda: SERVER, ready=lambda m: fake.ready[m], reload=fake.reload)


def test_a_stub_missing_on_two_scans_of_a_ready_model_gets_its_model_reloaded(fake: Fake) -> None:
    w = dog(fake)
    assert w.scan() == []
    del fake.stubs["a_0_0"]
    assert w.scan() == []  # one scan missing: a reload in progress looks the same
    assert w.scan() == ["a"] and fake.reloads == ["a"] and w.healed == {"a": 1}
    assert w.scan() == []  # the new stub is known; nothing more to do


def test_an_unloaded_model_is_left_alone(fake: Fake) -> None:
    w = dog(fake)
    w.scan()
    del fake.stubs["b_0_0"]
    fake.ready["b"] = False
    w.scan()
    assert w.scan() == [] and w.scan() == [] and fake.reloads == []


def test_an_index_that_does_not_answer_is_asked_again_not_taken_for_an_unloaded_model(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead stub whose model's state could not be read was dropped as if unloaded, silently: never healed."""
    caplog.set_level("INFO", logger="tritonforge.server")
    answers: list[bool | None] = [None, None, True]
    w = StubWatchdog(pid=lambda: SERVER, ready=lambda m: answers.pop(0), reload=fake.reload)
    w.scan()
    del fake.stubs["a_0_0"]
    w.scan()
    assert w.scan() == [] and w.scan() == []  # could not tell, twice: nothing reloaded, nothing forgotten
    assert "did not say whether 'a' is loaded" in caplog.text
    assert w.scan() == ["a"] and fake.reloads == ["a"]


def test_failed_reloads_back_off(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(stub_watchdog.time, "monotonic", lambda: clock[0])
    w = dog(fake)
    w.scan()
    del fake.stubs["a_0_0"]
    fake.fail = 2
    w.scan()
    assert w.scan() == []  # first try failed: next in 1 s
    assert w.scan() == []  # too early
    clock[0] += 1.0
    assert w.scan() == []  # second try failed: next in 2 s
    clock[0] += 1.5
    assert w.scan() == []
    clock[0] += 0.5
    assert w.scan() == ["a"] and fake.reloads == ["a"]


def test_a_dead_stubs_shared_memory_region_is_removed_once_its_model_is_healed(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Triton leaves a SIGKILLed stub's region in /dev/shm (1 MiB each, counted by a container's memory limit)."""
    regions = {"a_0_0": "triton_python_backend_shm_region_old", "b_0_0": "triton_python_backend_shm_region_b"}
    monkeypatch.setattr(stub_watchdog, "stub_processes", lambda pid: {i: (m, regions.get(i))
                                                                       for i, m in fake.stubs.items()})
    for name in (*regions.values(), "triton_python_backend_shm_region_new"):
        (tmp_path / name).write_bytes(b"\0")
    w = StubWatchdog(pid=lambda: SERVER, ready=lambda m: fake.ready[m], reload=fake.reload, shm=tmp_path)
    w.scan()
    del fake.stubs["a_0_0"]
    w.scan()
    regions["a_0_0"] = "triton_python_backend_shm_region_new"  # the reloaded stub's, under the same instance name
    assert w.scan() == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "triton_python_backend_shm_region_b", "triton_python_backend_shm_region_new",
    ]


def test_the_python_models_bytecode_is_written_before_triton_loads_them(tmp_path: Path) -> None:
    """The stubs then find current bytecode and write nothing into the version folders (which Triton would count
    as a change); a file that does not compile is left for Triton to report, and config files are not touched."""
    version = tmp_path / "scorer" / "1"
    (version / "helpers").mkdir(parents=True)
    (version / "model.py").write_text("import helpers.util\n")
    (version / "helpers" / "util.py").write_text("X = 1\n")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.py").write_text("def (:\n")
    (tmp_path / "scorer" / "config.pbtxt").write_text('backend: "python"\n')
    compile_python_models(tmp_path)
    tag = sys.implementation.cache_tag
    assert (version / "__pycache__" / f"model.{tag}.pyc").is_file()
    assert (version / "helpers" / "__pycache__" / f"util.{tag}.pyc").is_file()
    assert not (tmp_path / "broken" / "1" / "__pycache__").exists()
    assert not (tmp_path / "scorer" / "__pycache__").exists()


def test_a_version_folder_whose_bytecode_cannot_be_written_is_left_as_it_is(tmp_path: Path) -> None:
    """(As for a read-only repository: here a file stands where __pycache__ would go, which root cannot write
    through either.) No error: Triton's stubs then behave as before."""
    version = tmp_path / "scorer" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text("X = 1\n")
    (version / "__pycache__").write_text("not a folder")
    compile_python_models(tmp_path)
    assert (version / "__pycache__").read_text() == "not a folder"
