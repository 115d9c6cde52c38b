"""Model repositories in object stores: parse Triton's cloud URLs, and `tritonforge push` to S3.

Triton reads ``s3://bucket/prefix`` (AWS, region from ``AWS_DEFAULT_REGION``) and ``s3://host:port/bucket/prefix``
(any S3-compatible server, plain HTTP; ``s3://https://host:port/...`` for TLS), with the credentials in
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``. The layout under the prefix is the local one:
``<model>/config.pbtxt``, ``<model>/<version>/...``. S3 has no folders, so an empty version folder (every ensemble
has one) is kept as a zero-byte ``<model>/<version>/`` marker object, which Triton lists as a folder.

Pushing is content-hash aware: a manifest object (``.tritonforge-push.json`` under the prefix; Triton ignores files
at the repository root) records each file's sha256 with the size and ETag the store reported. A file is sent again
only if its sha256 changed or the object no longer matches what was recorded (someone replaced or deleted it).
Objects that a previous push sent and the repository no longer has are deleted, so no stale model lingers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonforge.errors import DeployError
from tritonforge.file_hash import file_sha256

MANIFEST_KEY = ".tritonforge-push.json"
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-]+:\d{1,5}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ObjectStoreURL:
    """A Triton cloud repository URL, split into its parts."""

    scheme: Literal["s3", "gs"]
    bucket: str
    prefix: str  # no leading or trailing '/'; '' for the bucket's root
    endpoint: str | None = None  # 'http://host:port' for an S3-compatible server; None for AWS / GCS

    @property
    def triton_url(self) -> str:
        """The form `tritonserver --model-repository` reads."""
        where = f"{self.bucket}/{self.prefix}".rstrip("/")
        if self.endpoint is None:
            return f"{self.scheme}://{where}"
        scheme, _, host = self.endpoint.partition("://")
        return f"s3://{host}/{where}" if scheme == "http" else f"s3://{self.endpoint}/{where}"

    @property
    def plain_url(self) -> str:
        """``s3://bucket/prefix`` without the endpoint (KServe's storageUri form; the endpoint goes elsewhere)."""
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel


def parse_object_store_url(url: str, what: str = "repository URL") -> ObjectStoreURL:
    """``s3://[http(s)://host:port/ | host:port/]bucket[/prefix]`` or ``gs://bucket[/prefix]``, or a DeployError."""
    allowed = "s3://bucket/prefix, s3://host:port/bucket/prefix or gs://bucket/prefix"
    if not isinstance(url, str):
        raise DeployError(f"{what} {url!r} ({type(url).__name__}): not an object-store URL (a str); expected {allowed}")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("s3", "gs"):
        raise DeployError(f"{what} {url!r}: not an object-store URL; expected {allowed}")
    endpoint = None
    if scheme == "s3":
        for proto in ("http://", "https://"):
            if rest.startswith(proto):
                host, _, rest = rest[len(proto) :].partition("/")
                endpoint = f"{proto}{host}"
                break
        else:
            first = rest.split("/", 1)[0]
            if _HOST_PORT.fullmatch(first):
                endpoint = f"http://{first}"  # Triton's default for a custom endpoint is plain HTTP
                rest = rest.split("/", 1)[1] if "/" in rest else ""
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise DeployError(
            f"{what} {url!r}: bucket {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, "
            f"'.', '-'); expected {allowed}"
        )
    return ObjectStoreURL(scheme, bucket, prefix.strip("/"), endpoint)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushReport:
    url: str
    uploaded: tuple[str, ...]
    unchanged: tuple[str, ...]
    deleted: tuple[str, ...]
    bytes_sent: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    revision: str | None = None  # push --release: the release written to <prefix>/<revision>


def repository_files(repo: Path) -> dict[str, Path | None]:
    """Relative key -> file, with None for an empty folder (kept as a 'folder/' marker object)."""
    files: dict[str, Path | None] = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if any(part.startswith(".") for part in path.relative_to(repo).parts):
            continue  # hidden files and folders (editor swap files, caches) are not part of a repository
        if path.is_file():
            files[rel] = path
        elif path.is_dir() and not any(path.iterdir()):
            files[rel + "/"] = None
    return files


def s3_client(url: ObjectStoreURL, endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client for the URL (credentials from the usual AWS chain: environment, profile, role)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as err:
        raise DeployError(f"pushing to an object store needs the `deploy` extra ({err.name} is missing)") from None
    # path-style addressing: S3-compatible servers (MinIO, moto, Ceph) rarely serve virtual-hosted buckets
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"})
    endpoint = endpoint_url or url.endpoint
    try:
        return boto3.client("s3", endpoint_url=endpoint, config=config)
    except ValueError as err:  # botocore refuses a malformed endpoint URL with a bare ValueError
        raise DeployError(f"--endpoint-url {endpoint!r}: {err}; expected e.g. http://host:9000") from None


def _listing(client: Any, url: ObjectStoreURL) -> Iterator[dict[str, Any]]:
    paginator = client.get_paginator("list_objects_v2")
    prefix = f"{url.prefix}/" if url.prefix else ""
    for page in paginator.paginate(Bucket=url.bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _read_manifest(client: Any, url: ObjectStoreURL) -> dict[str, dict[str, Any]]:
    try:
        body = client.get_object(Bucket=url.bucket, Key=url.key(MANIFEST_KEY))["Body"].read()
        files = json.loads(body).get("files", {})
        return files if isinstance(files, dict) else {}
    except client.exceptions.NoSuchKey:
        return {}
    except ValueError:
        return {}  # unreadable: send everything again


def _check_release(
    url: str, revision: str, recorded: dict[str, dict[str, Any]], local: dict[str, Path | None],
    to_send: list[tuple[str, Path | None, str]],
) -> None:
    """A release prefix is written once: what an earlier push recorded there must be this repository's files. Only
    a file recorded as pending (an interrupted push records every file it is about to send first) may be sent to
    a prefix that has a manifest; a prefix without one must be empty."""
    if not recorded:
        return  # nothing recorded: _push refuses objects there without a manifest (see its listing check)
    differ = sorted(rel for rel, _, sha in to_send if rel not in recorded
                    or recorded[rel].get("sha256") not in (None, sha))
    extra = sorted(rel for rel, was in recorded.items() if rel not in local and was.get("sha256"))
    if differ or extra:
        raise DeployError(
            f"{url}: release {revision} already holds other files ({', '.join((differ + extra)[:5])}"
            f"{', ...' if len(differ) + len(extra) > 5 else ''}); a release prefix is written once. Push to another "
            "prefix, or delete that release first if it was never deployed"
        )


def _write_manifest(client: Any, target: ObjectStoreURL, files: dict[str, dict[str, Any]]) -> None:
    body = json.dumps({"format": 1, "files": files}, indent=1, sort_keys=True).encode()
    client.put_object(Bucket=target.bucket, Key=target.key(MANIFEST_KEY), Body=body)


def push(
    repo: str | Path,
    url: str,
    *,
    endpoint_url: str | None = None,
    client: Any = None,
    delete: bool = True,
    progress: Callable[[str], None] | None = None,
    release: bool = False,
) -> PushReport:
    """Upload a built repository to ``url`` (``s3://[host:port/]bucket/prefix``), sending only changed files.

    Files sent by an earlier push that are gone locally are deleted (``delete``), including those of a push that
    was interrupted: the files about to be sent are recorded before the first is.

    ``release``: to ``<url>/<revision>`` (the repository's revision, as `deploy k8s` annotates its pods), written
    once: pushing the same release again sends nothing (or completes an interrupted push), and a prefix that holds
    other content is refused. Every pod of a Deployment rendered with that URL then reads the same files, whenever
    it starts, and a rollback's template names files that are still there."""
    revision = None
    if release:
        from tritonforge.deploy.revision import repository_revision

        if isinstance(repo, str | os.PathLike) and Path(repo).is_dir():
            revision = repository_revision(Path(repo))
            url = f"{url.rstrip('/')}/{revision}"
    try:
        report = _push(repo, url, endpoint_url=endpoint_url, client=client, delete=delete, progress=progress,
                       revision=revision)
    except DeployError as err:
        raise DeployError(err.problems, "cannot push") from None
    return dataclasses.replace(report, revision=revision)


def _push(
    repo: str | Path,
    url: str,
    *,
    endpoint_url: str | None,
    client: Any,
    delete: bool,
    progress: Callable[[str], None] | None,
    revision: str | None = None,
) -> PushReport:
    from botocore.exceptions import BotoCoreError, ClientError

    if not isinstance(repo, str | os.PathLike):
        raise DeployError(f"repository {repo!r} ({type(repo).__name__}): not a folder path (str or pathlib.Path)")
    repo = Path(repo)
    if not repo.is_dir():
        raise DeployError(f"repository {repo}: not a folder (build one with `tritonforge build`)")
    if not any(p.is_dir() and (p / "config.pbtxt").is_file() for p in repo.iterdir()):
        raise DeployError(f"repository {repo}: no model folder with a config.pbtxt; is it a model repository?")
    target = parse_object_store_url(url)
    if target.scheme != "s3":
        raise DeployError(
            f"push supports s3:// URLs (AWS or S3-compatible servers); got {url!r}: copy a gs:// repository with "
            "`gcloud storage rsync`"
        )
    if endpoint_url is not None and not endpoint_url.strip():  # '' fell back to AWS: "$ENDPOINT" unset
        raise DeployError("--endpoint-url is empty: give the S3 server (e.g. http://host:9000), or omit it for AWS")
    client = client or s3_client(target, endpoint_url)
    if endpoint_url and target.endpoint is None:  # the URL to serve it from must name the server it went to
        target = dataclasses.replace(target, endpoint=endpoint_url.rstrip("/"))
    say = progress or (lambda _m: None)
    try:
        client.head_bucket(Bucket=target.bucket)
        recorded = _read_manifest(client, target)
        remote = {o["Key"]: o for o in _listing(client, target)}
        local = repository_files(repo)
        uploaded: list[str] = []
        unchanged: list[str] = []
        sent = 0
        manifest: dict[str, dict[str, Any]] = {}
        to_send: list[tuple[str, Path | None, str]] = []
        for rel, path in local.items():
            sha = file_sha256(path) if path is not None else hashlib.sha256(b"").hexdigest()
            was, obj = recorded.get(rel, {}), remote.get(target.key(rel))
            if (
                obj is not None
                and was.get("sha256") == sha
                and was.get("size") == obj["Size"]
                and was.get("etag") == obj["ETag"]
            ):
                unchanged.append(rel)
                manifest[rel] = was
            else:
                to_send.append((rel, path, sha))
        if revision is not None and not recorded and remote:  # objects but no (readable) manifest: not ours to fill
            raise DeployError(
                f"{url}: release {revision} holds {len(remote)} objects but no push manifest ({MANIFEST_KEY}); a "
                "release prefix is written once: push to another prefix, or delete it first if it was never deployed"
            )
        if revision is not None:  # a release prefix holds this release's files or nothing (an interrupted push)
            _check_release(url, revision, recorded, local, to_send)
        if to_send:  # recorded first (as not yet sent): a push stopped midway leaves no object the next one forgets
            pending = {**recorded, **{rel: {"sha256": None} for rel, _path, _sha in to_send}}
            _write_manifest(client, target, pending)
            recorded = pending
        for i, (rel, path, sha) in enumerate(to_send, 1):
            key = target.key(rel)
            say(f"uploading {rel} ({i}/{len(to_send)})")
            if path is None:
                client.put_object(Bucket=target.bucket, Key=key, Body=b"", Metadata={"sha256": sha})
            else:
                client.upload_file(str(path), target.bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
                sent += path.stat().st_size
            uploaded.append(rel)
            manifest[rel] = {"sha256": sha}
        deleted = []
        if delete:
            stale = [rel for rel in recorded if rel not in local and target.key(rel) in remote]
            for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1000 keys
                batch = stale[start : start + 1000]
                say(f"deleting {len(batch)} objects no longer in the repository")
                client.delete_objects(
                    Bucket=target.bucket, Delete={"Objects": [{"Key": target.key(r)} for r in batch], "Quiet": True}
                )
            deleted = stale
        if uploaded:  # record size and ETag as the store reports them (multipart ETags are not an MD5)
            after = {o["Key"]: o for o in _listing(client, target)}
            for rel in uploaded:
                obj = after.get(target.key(rel))
                if obj is not None:
                    manifest[rel].update(size=obj["Size"], etag=obj["ETag"])
        if uploaded or deleted or set(recorded) != set(manifest):
            _write_manifest(client, target, manifest)
    except (BotoCoreError, ClientError) as err:
        raise DeployError(f"push to {url} failed: {err}") from None
    return PushReport(target.triton_url, tuple(uploaded), tuple(unchanged), tuple(deleted), sent)
