"""`tritonforge push` to a real S3-compatible server (moto, on loopback) and `tritonforge serve s3://...`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.deploy.object_store import MANIFEST_KEY, push
from tritonforge.server import TritonServer, free_port

pytestmark = pytest.mark.integration

SENTENCES = ["Triton reads this model from S3.", "A second sentence."]
BUCKET = "models"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 in server mode on a free loopback port, with throwaway credentials in the environment."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
    boto3 = pytest.importorskip("boto3")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket=BUCKET)
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _objects(endpoint: str, prefix: str) -> dict[str, dict]:  # type: ignore[type-arg]
    import boto3

    client = boto3.client("s3", endpoint_url=f"http://{endpoint}")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o for page in pages for o in page.get("Contents", [])}


def test_push_is_content_hash_aware(s3_endpoint: str, embed_repo: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(embed_repo, repo)
    (repo / "embed" / "2").mkdir()  # an empty version folder: kept as a 'folder/' marker object
    url = f"s3://{s3_endpoint}/{BUCKET}/hash-aware"
    first = push(repo, url)
    assert first.url == url and not first.unchanged and first.bytes_sent > 0
    keys = set(_objects(s3_endpoint, "hash-aware/"))
    assert "hash-aware/embed/config.pbtxt" in keys and "hash-aware/embed/2/" in keys
    assert f"hash-aware/{MANIFEST_KEY}" in keys

    again = push(repo, url)
    assert again.uploaded == () and again.bytes_sent == 0 and again.deleted == ()
    assert set(again.unchanged) == set(first.uploaded)

    config = repo / "embed" / "config.pbtxt"
    config.write_text(config.read_text() + "\n")
    (repo / "minilm_tokenizer" / "1" / "stale.txt").write_text("x")
    changed = push(repo, url)
    assert set(changed.uploaded) == {"embed/config.pbtxt", "minilm_tokenizer/1/stale.txt"}
    (repo / "minilm_tokenizer" / "1" / "stale.txt").unlink()
    removed = push(repo, url)
    assert removed.uploaded == () and removed.deleted == ("minilm_tokenizer/1/stale.txt",)
    assert "hash-aware/minilm_tokenizer/1/stale.txt" not in _objects(s3_endpoint, "hash-aware/")


def test_serve_from_s3_equals_the_local_repository(s3_endpoint: str, embed_repo: Path, embed_server) -> None:  # type: ignore[no-untyped-def]
    url = f"s3://{s3_endpoint}/{BUCKET}/embed"
    push(embed_repo, url)
    with Client(embed_server.endpoints.grpc, protocol="grpc") as client:
        want = client.embed(SENTENCES)
    server = TritonServer(url, startup_timeout=90)
    try:
        server.start()
        assert {m["name"] for m in server.model_states()} >= {"embed", "minilm_encoder", "minilm_tokenizer"}
        with Client(server.endpoints.grpc, protocol="grpc") as client:
            got = client.embed(SENTENCES)
    finally:
        server.stop()
    assert got.shape == want.shape == (len(SENTENCES), 384)
    assert float(np.abs(got - want).max()) <= 1e-6


def test_cli_push(s3_endpoint: str, embed_repo: Path) -> None:
    from typer.testing import CliRunner

    from tritonforge.cli import app

    url = f"s3://{s3_endpoint}/{BUCKET}/cli"
    result = CliRunner().invoke(app, ["push", str(embed_repo), url])
    assert result.exit_code == 0, result.output
    assert f"tritonforge serve {url}" in result.output
    result = CliRunner().invoke(app, ["push", str(embed_repo), f"s3://{s3_endpoint}/no-such-bucket/x"])
    assert result.exit_code == 1
    assert "no-such-bucket" in result.output


def test_a_push_stopped_midway_leaves_nothing_the_next_push_forgets(s3_endpoint: str, embed_repo: Path,
                                                                    tmp_path: Path) -> None:
    """The manifest was written only at the end: objects of an interrupted push that are then gone locally (a
    half-sent version folder, say) were never deleted, and Triton would have found that folder."""
    import shutil

    import boto3

    repo = tmp_path / "repo"
    shutil.copytree(embed_repo, repo)
    url = f"s3://{s3_endpoint}/{BUCKET}/stopped"
    push(repo, url)
    extra = repo / "minilm_tokenizer" / "2"
    shutil.copytree(repo / "minilm_tokenizer" / "1", extra)
    client = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}")
    real_upload, sent = client.upload_file, []

    def upload_then_stop(path: str, bucket: str, key: str, **kwargs: object) -> None:
        if sent:
            raise KeyboardInterrupt  # the push is stopped after its first file
        real_upload(path, bucket, key, **kwargs)
        sent.append(key)

    client.upload_file = upload_then_stop  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        push(repo, url, client=client)
    assert sent and sent[0].startswith("stopped/minilm_tokenizer/2/")
    shutil.rmtree(extra)
    report = push(repo, url)
    assert report.deleted == (sent[0].removeprefix("stopped/"),)
    assert not [k for k in _objects(s3_endpoint, "stopped/") if k.startswith("stopped/minilm_tokenizer/2/")]


def test_push_with_an_endpoint_option_names_it_in_the_url_to_serve(s3_endpoint: str, embed_repo: Path) -> None:
    """It printed `tritonforge serve s3://bucket/prefix`, which reads from AWS."""
    report = push(embed_repo, f"s3://{BUCKET}/endpoint-option", endpoint_url=f"http://{s3_endpoint}")
    assert report.url == f"s3://{s3_endpoint}/{BUCKET}/endpoint-option"


def test_push_errors_say_push() -> None:
    from tritonforge.errors import DeployError

    with pytest.raises(DeployError, match=r"^cannot push \(1\)"):
        push(Path("/nonexistent-repository"), "s3://bucket/x")


def test_a_release_is_written_once_under_its_revision(s3_endpoint: str, embed_repo: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`push --release` writes <prefix>/<revision> (what deploy annotates the pods with): pushing it again sends
    nothing; other files under the same release are refused before anything is sent; the CLI prints the URL to
    deploy. Pods started at any time then read the same files, and a rollback's files are still there."""
    import shutil

    from typer.testing import CliRunner

    from tritonforge.cli import app
    from tritonforge.deploy import revision as revision_module
    from tritonforge.errors import DeployError

    repo = tmp_path / "repo"
    shutil.copytree(embed_repo, repo)
    revision = revision_module.repository_revision(repo)
    url = f"s3://{s3_endpoint}/{BUCKET}/releases"
    first = push(repo, url, release=True)
    assert first.revision == revision and first.url == f"{url}/{revision}" and first.uploaded
    assert f"releases/{revision}/embed/config.pbtxt" in _objects(s3_endpoint, "releases/")
    again = push(repo, url, release=True)
    assert again.uploaded == () and again.deleted == () and again.unchanged
    # the same revision with other files (content the revision does not cover, changed in place): refused
    model_py = next(repo.glob("*/1/model.py"))
    model_py.write_text(model_py.read_text() + "\n# changed\n")
    monkeypatch.setattr(revision_module, "repository_revision", lambda _repo: revision)
    before = _objects(s3_endpoint, f"releases/{revision}/")
    with pytest.raises(DeployError, match=rf"release {revision} already holds other files \(.*model.py\); a release "
                                          r"prefix is written once"):
        push(repo, url, release=True)
    assert _objects(s3_endpoint, f"releases/{revision}/").keys() == before.keys()
    assert {k: o["ETag"] for k, o in _objects(s3_endpoint, f"releases/{revision}/").items()} == {
        k: o["ETag"] for k, o in before.items()}
    model_py.write_text(model_py.read_text().removesuffix("\n# changed\n"))
    (repo / "embed" / "NOTES.txt").write_text("a file the release never had")  # added content: refused too
    with pytest.raises(DeployError, match=r"already holds other files \(embed/NOTES.txt\)"):
        push(repo, url, release=True)
    (repo / "embed" / "NOTES.txt").unlink()
    import boto3

    boto3.client("s3", endpoint_url=f"http://{s3_endpoint}").delete_object(
        Bucket=BUCKET, Key=f"releases/{revision}/{MANIFEST_KEY}")
    with pytest.raises(DeployError, match=rf"release {revision} holds \d+ objects but no push manifest"):
        push(repo, url, release=True)  # whose files they are cannot be told: not filled in
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["push", str(embed_repo), f"{url}-cli", "--release"])
    assert result.exit_code == 0, result.output
    assert f"pushed release {revision_module.repository_revision(embed_repo)} to" in result.output
    assert "deploy it with: tritonforge deploy k8s" in result.output and "--repository-url" in result.output
