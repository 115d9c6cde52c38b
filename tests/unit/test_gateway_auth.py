"""API keys of the gateway: file and environment parsing, bearer headers, constant-time comparison."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest

from tritonforge.gateway import auth as gateway_auth
from tritonforge.gateway import file_watch
from tritonforge.gateway.auth import (
    ENV_VAR,
    KeyChecker,
    is_loopback,
    load_api_keys,
    parse_env_keys,
    parse_key_file,
)


def test_key_file_one_per_line_with_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\nsk-one\n\n  sk-two  \r\nsk-one\n#sk-disabled\n", encoding="utf-8")
    assert parse_key_file(path) == ["sk-one", "sk-two"]


def test_key_file_rejects_keys_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="whitespace"):
        parse_key_file(path)


def test_env_keys_are_comma_separated() -> None:
    assert parse_env_keys(" a, b,,c ,") == ["a", "b", "c"]
    assert parse_env_keys("") == [] and parse_env_keys(None) == []


def test_load_merges_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-file\nsk-both\n", encoding="utf-8")
    assert load_api_keys(path, {ENV_VAR: "sk-env,sk-both"}) == ["sk-file", "sk-both", "sk-env"]
    assert load_api_keys(None, {}) == []
    assert load_api_keys(None, {ENV_VAR: "sk-env"}) == ["sk-env"]


def test_load_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "k1,k2")
    assert load_api_keys() == ["k1", "k2"]


def test_a_key_file_that_is_missing_unreadable_or_empty_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"key file {tmp_path / 'absent'}: no such file"):
        load_api_keys(tmp_path / "absent", {})
    (tmp_path / "latin1").write_bytes(b"sk-caf\xe9\n")
    with pytest.raises(ValueError, match="latin1: not UTF-8 text"):
        parse_key_file(tmp_path / "latin1")
    (tmp_path / "empty").write_text("# only a comment\n\n")
    # a key file given but empty must not leave the gateway open (the environment's keys do not change that)
    with pytest.raises(ValueError, match="empty holds no key"):
        load_api_keys(tmp_path / "empty", {ENV_VAR: "sk-env"})


def test_bearer_header_parsing() -> None:
    assert KeyChecker.bearer("Bearer sk-1") == "sk-1"
    assert KeyChecker.bearer("bearer   sk-1 ") == "sk-1"
    for bad in (None, "", "Bearer", "Bearer ", "Basic sk-1", "sk-1"):
        assert KeyChecker.bearer(bad) is None


def test_checker_accepts_only_configured_keys() -> None:
    checker = KeyChecker(["sk-a", "sk-b"])
    assert checker.enabled and len(checker) == 2
    assert checker.check_header("Bearer sk-a") and checker.check_header("Bearer sk-b")
    for bad in (None, "", "Bearer sk-c", "Bearer sk-a2", "Bearer sk-", "Basic sk-a", "sk-a", "Bearer SK-A"):
        assert not checker.check_header(bad), bad
    assert not checker.check_key(None) and not checker.check_key("")


def test_non_ascii_keys_do_not_raise() -> None:
    checker = KeyChecker(["sk-clé"])
    assert checker.check_header("Bearer sk-clé")
    assert not checker.check_header("Bearer sk-cle")


def test_no_keys_means_open() -> None:
    for keys in (None, [], ["", "  "]):
        checker = KeyChecker(keys)
        assert not checker.enabled
        assert checker.check_header(None) and checker.check_header("Bearer anything")


def test_every_key_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(gateway_auth.hmac, "compare_digest", spy)
    checker = KeyChecker(["sk-first", "sk-second", "sk-third"])
    assert checker.check_header("Bearer sk-first")  # a match on the first key still compares the others
    assert [b for _, b in calls] == [b"sk-first", b"sk-second", b"sk-third"]
    calls.clear()
    assert not checker.check_header("Bearer sk-nope")
    assert len(calls) == 3 and all(a == b"sk-nope" for a, _ in calls)


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""):
        assert not is_loopback(host), host


def test_a_watched_key_file_is_read_again_when_it_changes_and_never_opens_the_gateway(tmp_path: Path) -> None:
    """Found by a k8s audit: the keys file was read once at start, so a key revoked or rotated in its Secret kept
    working until the pods restarted. The file is read again when it changes; a file that becomes empty or
    unreadable keeps the keys it had (an empty key set would mean an open gateway)."""
    import os
    import time

    path = tmp_path / "keys"
    path.write_text("sk-old\nsk-shared\n")
    now = [0.0]
    checker = KeyChecker(["sk-env"], path=path, clock=lambda: now[0])
    assert checker.check_header("Bearer sk-old") and checker.check_header("Bearer sk-env")

    def rewrite(text: str) -> None:
        path.write_text(text)
        st = path.stat()  # written long enough ago to be read whole
        os.utime(path, ns=(st.st_atime_ns, time.time_ns() - 10**9))
        now[0] += 2.0

    rewrite("sk-new\nsk-shared\n")
    assert not checker.check_header("Bearer sk-old")  # revoked
    assert checker.check_header("Bearer sk-new") and checker.check_header("Bearer sk-env")
    for broken in ("", "# only a comment\n"):
        rewrite(broken)
        assert checker.check_header("Bearer sk-new") and not checker.check_header("Bearer nobody")
    path.unlink()
    now[0] += 2.0
    assert checker.check_header("Bearer sk-new") and checker.enabled
    path.write_text("sk-fresh\n")  # written just now: read at a later check, once it has settled
    now[0] += 2.0
    assert checker.check_header("Bearer sk-new")
    time.sleep(file_watch.SETTLE_SECONDS + 0.05)
    now[0] += 2.0
    assert checker.check_header("Bearer sk-fresh") and not checker.check_header("Bearer sk-new")
