"""The repository writer: built in a temporary folder, swapped in only when the check passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonforge.errors import RepositoryError
from tritonforge.repository import write_repository


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
    assert sorted(p.name for p in out.iterdir()) == ["old"]
    assert _leftovers(tmp_path) == []


def test_replacing_swaps_the_whole_tree(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository({"old/config.pbtxt": b"old"}, out)
    write_repository({"new/config.pbtxt": b"new"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["new"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", ""])
def test_paths_must_stay_inside(tmp_path: Path, bad: str) -> None:
    with pytest.raises(RepositoryError, match="relative path inside the repository"):
        write_repository({bad: b"x"}, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
