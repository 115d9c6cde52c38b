"""Releases given bad input: a wrong --repo, a corrupt releases.json, unreadable configs, an empty or broken source,
a repeated --model, and a Triton that cannot be reached or refuses the admin key. Each is a ReleaseError naming
what was wrong, with nothing changed on disk."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from release_support import scorer_repo
from typer.testing import CliRunner

from tritonforge.cli import app
from tritonforge.errors import ReleaseError
from tritonforge.releases import (
    LOCK_FILE,
    RELEASES_FILE,
    TritonControl,
    add_versions,
    list_releases,
    model_releases,
    pin,
    promote,
    rollback,
    unpin,
    versions_on_disk,
)


@pytest.fixture()
def repos(tmp_path: Path) -> tuple[Path, Path]:
    return scorer_repo(tmp_path / "serving", {1: b"old"}), scorer_repo(tmp_path / "new", {1: b"new"})


COMMANDS: dict[str, Callable[[Path], object]] = {
    "promote": lambda repo: promote(repo, "scorer", 1),
    "rollback": lambda repo: rollback(repo, "scorer"),
    "pin": lambda repo: pin(repo, "scorer", 1),
    "unpin": lambda repo: unpin(repo, "scorer"),
}


# ------------------------------------------------------------------------------------- 1: the repository path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_repo_or_a_file_is_named_not_a_traceback(tmp_path: Path, command: str) -> None:
    with pytest.raises(ReleaseError, match=r"model repository .*missing.* does not exist: expected a model repository"):
        COMMANDS[command](tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ReleaseError, match=r"model repository .*afile.* is not a folder: expected a model repository"):
        COMMANDS[command](tmp_path / "afile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_empty_folder_is_not_a_repository_and_gets_no_lock_file(tmp_path: Path, command: str) -> None:
    with pytest.raises(ReleaseError, match=r"holds no models, so it is not a model repository"):
        COMMANDS[command](tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_default_repo_missing_in_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRITONFORGE_REPO", raising=False)
    for args in (["promote", "scorer", "1"], ["rollback", "scorer"], ["pin", "scorer"], ["unpin", "scorer"]):
        result = CliRunner().invoke(app, ["release", *args], env={"COLUMNS": "300"})
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "model_repository" in result.output and "does not exist" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_empty_repo_path_is_refused_not_taken_for_the_current_folder(
    repos: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # what an unset shell variable gives (`--repo "$REPO"`): Path("") would be the current folder, here a repository
    monkeypatch.chdir(repos[0])
    for call in (*COMMANDS.values(), list_releases):
        with pytest.raises(ReleaseError, match=r"model repository '' is not a path: give its folder \('\.' for"):
            call("")  # type: ignore[operator]
    for args in (["list"], ["promote", "scorer", "1"], ["rollback", "scorer"]):
        result = CliRunner().invoke(app, ["release", *args, "--repo", ""], env={"COLUMNS": "300"})
        assert result.exit_code == 1 and "model repository '' is not a path" in result.output, result.output
    assert not (repos[0] / LOCK_FILE).exists() and not (repos[0] / RELEASES_FILE).exists()


def test_listing_a_folder_without_models_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["release", "list", "--repo", str(tmp_path)], env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "holds no models (no sub-folder with a config.pbtxt)" in result.output
    result = CliRunner().invoke(app, ["release", "list", "--repo", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == []


def test_a_model_name_that_is_a_path_is_not_a_model(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    before = (new / "scorer" / "config.pbtxt").read_bytes()
    with pytest.raises(ReleaseError, match=r"'\.\./new/scorer' is not a model of .* \(models: scorer\)"):
        promote(serving, "../new/scorer", 1)  # a config outside the repository must not be rewritten
    assert (new / "scorer" / "config.pbtxt").read_bytes() == before


# ------------------------------------------------------------------------------------- 2: a corrupt releases.json

CORRUPT = {
    "model entry a string": ({"models": {"scorer": "x"}}, r"models\.scorer must be an object"),
    "history a string": ({"models": {"scorer": {"history": "abc"}}}, r"models\.scorer\.history must be a list"),
    "version not a number": (
        {"models": {"scorer": {"history": [{"action": "promote", "version": "two"}]}}},
        r"models\.scorer\.history\[0\]\.version must be a version number \(1 or more\), got 'two'",
    ),
    "event not an object": ({"models": {"scorer": {"history": ["x"]}}}, r"history\[0\] must be an object"),
    "unknown action": (
        {"models": {"scorer": {"history": [{"action": "promoted", "version": 1}]}}},
        r"history\[0\]\.action must be one of initial, add, promote, rollback, pin, unpin, got 'promoted'",
    ),
    "pinned not a number": ({"models": {"scorer": {"pinned": "x", "history": []}}}, r"pinned must be a version"),
    "top level a list": ([1], r"must be an object with a 'models' object"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_malformed_history_is_named_before_anything_changes(repos: tuple[Path, Path], case: str) -> None:
    serving, new = repos
    data, message = CORRUPT[case]
    (serving / RELEASES_FILE).write_text(json.dumps(data))
    config = (serving / "scorer" / "config.pbtxt").read_bytes()
    for run in (
        lambda: list_releases(serving),
        lambda: promote(serving, "scorer", 1),
        lambda: rollback(serving, "scorer"),
        lambda: add_versions(serving, new),
    ):
        with pytest.raises(ReleaseError, match=rf"releases\.json is not a valid release history .*{message}"):
            run()
    assert (serving / "scorer" / "config.pbtxt").read_bytes() == config
    assert json.loads((serving / RELEASES_FILE).read_text()) == data
    assert versions_on_disk(serving / "scorer") == [1]


def test_a_history_missing_its_keys_still_reads(repos: tuple[Path, Path]) -> None:
    serving, _ = repos
    (serving / RELEASES_FILE).write_text('{"models": {"scorer": {}}}')
    assert promote(serving, "scorer", 1).version == 1
    assert model_releases(serving, "scorer").pinned is None


# ------------------------------------------------------------------------------------- 3: a non-UTF-8 config.pbtxt


def test_a_non_utf8_config_is_named(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    (new / "scorer" / "config.pbtxt").write_bytes(b'name: "scorer"\xff\n')
    with pytest.raises(ReleaseError, match=r"scorer: .*new/scorer/config\.pbtxt is not UTF-8 text"):
        add_versions(serving, new)
    with pytest.raises(ReleaseError, match=r"new/scorer/config\.pbtxt is not UTF-8 text"):
        list_releases(new)
    with pytest.raises(ReleaseError, match=r"new/scorer/config\.pbtxt is not UTF-8 text"):
        promote(new, "scorer", 1)
    result = CliRunner().invoke(app, ["release", "list", "--repo", str(new)], env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "is not UTF-8 text" in result.output


# ------------------------------------------------------------------------------------- 4-6: release add


def test_add_from_a_source_without_models_is_refused(repos: tuple[Path, Path], tmp_path: Path) -> None:
    serving, _ = repos
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReleaseError, match=r"source repository .*empty holds no models"):
        add_versions(serving, tmp_path / "empty")
    args = ["release", "add", "--repo", str(serving), "--from", str(tmp_path / "empty")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "holds no models" in result.output and "nothing to add" not in result.output
    assert not (serving / LOCK_FILE).exists() and not (serving / RELEASES_FILE).exists()
    with pytest.raises(ReleaseError, match=r"source repository .*nope.* does not exist: .*name it with --from"):
        add_versions(serving, tmp_path / "nope")


def test_a_repeated_model_is_added_once(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    assert add_versions(serving, new, ["scorer", "scorer"]) == {"scorer": 2}
    assert versions_on_disk(serving / "scorer") == [1, 2]
    result = CliRunner().invoke(
        app, ["release", "add", "--repo", str(serving), "--from", str(new), "--model", "scorer", "--model", "scorer"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("added scorer version 3") == 1
    assert versions_on_disk(serving / "scorer") == [1, 2, 3]


def test_a_broken_source_config_is_named_by_its_path(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    (new / "scorer" / "config.pbtxt").write_text("garbage {{\n")
    with pytest.raises(ReleaseError, match=rf"scorer: failed to read text proto from {new}/scorer/config\.pbtxt"):
        add_versions(serving, new)
    assert versions_on_disk(serving / "scorer") == [1]


# ------------------------------------------------------------------------------------- 7: the server, not the version


def test_an_unreachable_triton_is_not_blamed_on_the_version(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    before = (serving / "scorer" / "config.pbtxt").read_bytes()
    with pytest.raises(ReleaseError) as caught:
        promote(serving, "scorer", 2, control=TritonControl("127.0.0.1:1", timeout=5))
    message = str(caught.value)
    assert "could not be reached" in message and "127.0.0.1:1 is unreachable" in message
    assert "failed to load" not in message
    assert (serving / "scorer" / "config.pbtxt").read_bytes() == before
    assert model_releases(serving, "scorer").active == (1,)


class _RestrictedTriton(BaseHTTPRequestHandler):
    """Triton's answer to a model-control call without (or with a wrong) admin key."""

    def do_POST(self) -> None:
        body = json.dumps({"error": "This API is restricted, expecting header 'tritonforge-admin-key'"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def restricted_triton() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RestrictedTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_admin_key_is_not_blamed_on_the_version(repos: tuple[Path, Path], restricted_triton: str) -> None:
    serving, new = repos
    add_versions(serving, new)
    before = (serving / "scorer" / "config.pbtxt").read_bytes()
    with pytest.raises(ReleaseError) as caught:
        promote(serving, "scorer", 2, control=TritonControl(restricted_triton, admin_key="wrong", timeout=5))
    message = str(caught.value)
    assert "refused the model-control call" in message and "admin key" in message and restricted_triton in message
    assert "failed to load" not in message
    assert (serving / "scorer" / "config.pbtxt").read_bytes() == before


def test_a_bad_triton_address_is_refused_before_any_change(repos: tuple[Path, Path]) -> None:
    serving, new = repos
    add_versions(serving, new)
    args = ["release", "promote", "scorer", "2", "--repo", str(serving), "--triton", "a/b"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "Triton address 'a/b' cannot be used" in result.output
    assert model_releases(serving, "scorer").active == (1,)
