"""gateway/file_watch.py: the one watcher of the files the gateway re-reads (API keys, admin keys, splits)."""

from __future__ import annotations

import os
from pathlib import Path

from tritonforge.gateway.file_watch import FileState, FileWatch


def _age(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_swapped_link_to_a_file_of_the_same_size_and_time_is_a_change(tmp_path: Path) -> None:
    """A Kubernetes Secret or ConfigMap update points the mounted name at a new file; the new one can have the old
    one's size and mtime, so the inode is part of the state (the split file's watch compared only the first two)."""
    old, new, mounted = tmp_path / "a", tmp_path / "b", tmp_path / "keys"
    old.write_text("key-one\n")
    new.write_text("key-two\n")
    stamp = old.stat().st_mtime_ns - 10**10  # long settled
    _age(old, stamp)
    _age(new, stamp)
    mounted.symlink_to(old)
    seen: list[FileState | None] = []

    def on_change(state: FileState | None) -> bool:
        seen.append(state)
        return True

    watch = FileWatch(mounted, on_change, interval=0.0)
    watch.poll()
    assert seen == []
    (tmp_path / "tmp").symlink_to(new)
    os.replace(tmp_path / "tmp", mounted)  # the swap
    watch.poll()
    assert len(seen) == 1 and seen[0] is not None and seen[0].inode == new.stat().st_ino


def test_a_change_not_taken_is_offered_again_and_a_fresh_write_waits_to_settle(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("x")
    taken: list[bool] = []
    offers: list[FileState | None] = []

    def on_change(state: FileState | None) -> bool:
        offers.append(state)
        return bool(taken and taken[-1])

    now = [0.0]
    watch = FileWatch(path, on_change, interval=1.0, clock=lambda: now[0])
    path.unlink()
    watch.poll()
    assert offers == [None]  # gone: offered, not taken
    watch.poll()
    assert offers == [None]  # not again within the interval
    now[0] = 1.0
    watch.poll()
    assert offers == [None, None]  # offered again after it
    path.write_text("yy")  # just written: still settling, not offered
    now[0] = 2.0
    watch.poll()
    assert offers == [None, None]
    _age(path, path.stat().st_mtime_ns - 10**10)
    taken.append(True)
    now[0] = 3.0
    watch.poll()
    assert len(offers) == 3 and offers[-1] == watch.state is not None
    now[0] = 4.0
    watch.poll()
    assert len(offers) == 3  # taken: unchanged since
