"""The repository writer: built in a temporary folder, swapped in only when the check passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tritonforge.errors import RepositoryError
from tritonforge.repository import OUTPUT_MARKER, write_repository


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_writes_files_links_and_empty_folders(tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    src.write_bytes(b"\x00\x01")
    out = write_repository({"m/config.pbtxt": b"name: 'm'", "m/1/weights.bin": src, "e/1/": b""}, tmp_path / "repo")
    assert (out / "m" / "config.pbtxt").read_bytes() == b"name: 'm'"
    assert (out / "m" / "1" / "weights.bin").read_bytes() == b"\x00\x01"
    assert (out / "e" / "1").is_dir() and not any((out / "e" / "1").iterdir())


def test_failed_check_leaves_previous_repository_untouched(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository({"old/config.pbtxt": b"old"}, out)

    def refuse(tmp: Path) -> None:
        assert (tmp / "new" / "config.pbtxt").exists()
        raise RepositoryError("refused")

    with pytest.raises(RepositoryError, match="refused"):
        write_repository({"new/config.pbtxt": b"new"}, out, check=refuse)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "old"]
    assert _leftovers(tmp_path) == []


def test_replacing_swaps_the_whole_tree(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository({"old/config.pbtxt": b"old"}, out)
    write_repository({"new/config.pbtxt": b"new"}, out)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "new"]
    assert _leftovers(tmp_path) == []


def test_an_earlier_output_with_something_added_since_is_not_replaced(tmp_path: Path) -> None:
    """A note and a hand-written model put beside a build's models were deleted by the next build, with exit 0
    (first-run audit): the marker lists what the output wrote, and anything else stops the replacement."""
    out = tmp_path / "repo"
    write_repository({"m/config.pbtxt": b"x", "tritonforge.json": b"{}"}, out)
    assert (out / OUTPUT_MARKER).read_text().splitlines()[-2:] == ["m/config.pbtxt", "tritonforge.json"]
    (out / "my_notes.txt").write_text("keep me")
    (out / "my_model").mkdir()
    (out / "my_model" / "config.pbtxt").write_text("name: 'mine'")
    (out / "m" / "2").mkdir()
    (out / "m" / "2" / "model.onnx").write_bytes(b"a version copied in by hand")  # inside a model folder too
    with pytest.raises(RepositoryError, match=r"it holds what the earlier output did not write \(m/2/model.onnx, "
                                              r"my_model/config.pbtxt, my_notes.txt\), which replacing it would"):
        write_repository({"m/config.pbtxt": b"y"}, out)
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "m" / "config.pbtxt").read_bytes() == b"x"
    for added in ("my_notes.txt", "my_model/config.pbtxt", "m/2/model.onnx"):
        (out / added).unlink()
    (out / "m" / "__pycache__").mkdir()  # what Triton's python backend writes when it serves: not an addition
    (out / "m" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"")
    write_repository({"m/config.pbtxt": b"y"}, out)  # what it wrote itself is replaced, as before (empty folders
    # left behind count for nothing)
    assert (out / "m" / "config.pbtxt").read_bytes() == b"y"
    # an engine build_engines.sh writes later into a folder the build owns, a desktop's hidden file, and a file
    # name that str.splitlines() would have split: none of them blocks the next build
    write_repository({"m/config.pbtxt": b"y", "odd\x85name": b""}, out, owned=["m/1/engine"])
    (out / "m" / "1" / "engine").mkdir(parents=True)
    (out / "m" / "1" / "engine" / "rank0.engine").write_bytes(b"")
    (out / ".DS_Store").write_bytes(b"")
    write_repository({"m/config.pbtxt": b"y"}, out)
    # a marker from before the list: what the new output writes is replaced, anything else stops it (it was
    # replaced as a whole, deleting what users had added: upgrade audit)
    (out / OUTPUT_MARKER).write_text("Written by tritonforge. The next build or deploy into this folder replaces it "
                                      "as a whole.\n")
    (out / "extra").write_text("")
    with pytest.raises(RepositoryError, match=r"it holds what a build does not write \(extra\).*older tritonforge"):
        write_repository({"m/config.pbtxt": b"z"}, out)
    (out / "extra").unlink()
    write_repository({"m/config.pbtxt": b"z"}, out)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", ""])
def test_paths_must_stay_inside(tmp_path: Path, bad: str) -> None:
    with pytest.raises(RepositoryError, match="relative path inside the repository"):
        write_repository({bad: b"x"}, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_folder_that_is_not_an_earlier_output_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(RepositoryError, match=r"refusing to replace .*mine: it is not empty \(notes.txt\)"):
        write_repository({"m/config.pbtxt": b"x"}, out)
    assert (out / "notes.txt").read_text() == "keep me"
    assert _leftovers(tmp_path) == []
    # an empty folder, an earlier output and a repository an earlier build wrote (its tritonforge.json) are replaced
    (out / "notes.txt").unlink()
    write_repository({"m/config.pbtxt": b"x"}, out)
    write_repository({"n/config.pbtxt": b"y"}, out)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "n"]
    legacy = tmp_path / "legacy"
    (legacy / "old" / "1").mkdir(parents=True)
    (legacy / "old" / "config.pbtxt").write_text("name: 'old'")
    (legacy / "old" / "1" / "lineage.json").write_text("{}")
    (legacy / "tritonforge.json").write_text('{"spec": "s", "target": "cpu", "artifacts": []}')
    with pytest.raises(RepositoryError, match="not an earlier tritonforge output"):
        write_repository({"deployment.yaml": b"x"}, legacy)  # only a build's own plan replaces a build
    write_repository({"m/config.pbtxt": b"x", "tritonforge.json": b"{}"}, legacy)
    assert not (legacy / "old").exists()


@pytest.mark.parametrize("marker", [None, "Written by tritonforge. The next build or deploy into this folder "
                                           "replaces it as a whole.\n"])
def test_an_older_build_with_models_or_versions_added_by_hand_is_not_replaced(tmp_path: Path, marker: str | None) -> None:
    """Builds from before the output marker, or from before it listed its files, were replaced as a whole after an
    upgrade: a hand-written model, a version folder copied in and a note beside the models were deleted, exit 0
    (upgrade audit). A build wrote each model as a config.pbtxt and version 1 with its lineage.json."""
    out = tmp_path / "old"
    for model in ("embed", "encoder"):
        (out / model / "1").mkdir(parents=True)
        (out / model / "config.pbtxt").write_text(f"name: '{model}'")
        (out / model / "1" / "lineage.json").write_text("{}")
    (out / "encoder" / "1" / "model.onnx").write_bytes(b"weights")
    (out / "tritonforge.json").write_text('{"spec": "s", "target": "cpu", "artifacts": []}')
    if marker is not None:
        (out / OUTPUT_MARKER).write_text(marker)
    plan = {"embed/config.pbtxt": b"new", "encoder/config.pbtxt": b"new", "tritonforge.json": b"{}"}
    additions = [
        {"encoder/7/model.onnx": "a version copied in by hand"},
        {"my_model/1/model.py": "hand-written", "my_model/config.pbtxt": "name: 'mine'"},
    ]
    if marker is not None:  # before the marker, a loose file already made the folder no earlier build
        additions.append({"NOTES.txt": "keep me"})
    for added in additions:
        for name, text in added.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
        shown = ", ".join(sorted(added))
        with pytest.raises(RepositoryError, match=rf"it holds what a build does not write \({shown}\)"):
            write_repository(plan, out)
        for name, text in added.items():
            assert (out / name).read_text() == text
            (out / name).unlink()
        shutil.rmtree(out / "my_model", ignore_errors=True)  # a model folder without a config: no earlier build
    (out / "encoder" / "1" / "__pycache__").mkdir()
    (out / "encoder" / "1" / "__pycache__" / "model.pyc").write_bytes(b"")
    write_repository(plan, out)  # what the build wrote, and what serving wrote, is replaced as before
    assert (out / "embed" / "config.pbtxt").read_bytes() == b"new" and not (out / "encoder" / "1").exists()


@pytest.mark.parametrize(("manifest", "beside"), [
    ("{}", {}),  # not a build's report
    ('{"spec": "s", "target": "cpu", "artifacts": []}', {"notes.txt": "important"}),  # a file no build writes
    ('{"spec": "s", "target": "cpu", "artifacts": []}', {"src/main.py": "code"}),  # a folder that is no model
])
def test_a_tritonforge_json_alone_does_not_make_a_folder_an_earlier_build(
    tmp_path: Path, manifest: str, beside: dict[str, str]
) -> None:
    """Any folder with a tritonforge.json was replaced, deleting whatever else it held."""
    out = tmp_path / "oldish"
    (out / "m").mkdir(parents=True)
    (out / "m" / "config.pbtxt").write_text("name: 'm'")
    (out / "tritonforge.json").write_text(manifest)
    for name, text in beside.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    with pytest.raises(RepositoryError, match="not an earlier tritonforge output"):
        write_repository({"m/config.pbtxt": b"x", "tritonforge.json": b"{}"}, out)  # a build's own plan
    for name, text in beside.items():
        assert (out / name).read_text() == text


def test_the_current_folder_its_parents_and_inputs_are_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    write_repository({"m/config.pbtxt": b"x"}, work)  # an earlier output: replaceable, but not while inside it
    monkeypatch.chdir(work)
    for out in (".", "", str(work), str(tmp_path)):
        with pytest.raises(RepositoryError, match=r"the current folder|cannot be an output folder"):
            write_repository({"m/config.pbtxt": b"y"}, out)
    monkeypatch.chdir(tmp_path)
    spec_dir = work / "specs"
    spec_dir.mkdir()
    with pytest.raises(RepositoryError, match=r"it would replace .*specs, an input of this command"):
        write_repository({"m/config.pbtxt": b"y"}, work, protect=[spec_dir])
    with pytest.raises(RepositoryError, match="cannot be an output folder"):
        write_repository({"m/config.pbtxt": b"y"}, work / "specs" / "..")
    assert (work / "m" / "config.pbtxt").read_bytes() == b"x"


def test_impossible_output_paths_are_refused_cleanly(tmp_path: Path) -> None:
    (tmp_path / "afile.txt").write_text("x")
    with pytest.raises(RepositoryError, match="exists and is not a folder"):
        write_repository({"m/config.pbtxt": b"x"}, tmp_path / "afile.txt")
    with pytest.raises(RepositoryError, match=r"cannot create .*afile.txt/sub"):
        write_repository({"m/config.pbtxt": b"x"}, tmp_path / "afile.txt" / "sub")


def test_the_written_folder_is_readable_by_others(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        out = write_repository({"m/config.pbtxt": b"x"}, tmp_path / "repo")
    finally:
        os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755
