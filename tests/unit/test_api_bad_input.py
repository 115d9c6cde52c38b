"""The Python API given bad input (the CLI's own audit is test_cli_bad_input.py / test_releases_bad_input.py): each
mistake a build script or a service could make is a TritonForgeError naming what was wrong and what is allowed,
raised before anything is written, never a raw TypeError/AttributeError/... from deep inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from release_support import scorer_repo

import tritonforge
from tritonforge.clients import Client, ClientOptions, KeepAliveOptions, RetryPolicy
from tritonforge.clients.generation import Sampling, generation_inputs
from tritonforge.errors import (
    ClientError,
    InvalidInputError,
    OptionError,
    ReleaseError,
    ServerError,
    SpecError,
    TransientError,
)
from tritonforge.releases import (
    RELEASES_FILE,
    TritonControl,
    add_versions,
    list_releases,
    model_releases,
    pin,
    promote,
)
from tritonforge.spec import load_spec, parse_spec


def _repo(root: Path) -> Path:
    return scorer_repo(root, {1: b"1", 2: b"2"})


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------------ releases


@pytest.mark.parametrize("version", [True, 1.0, "1", 0, -2, None])
def test_promote_refuses_a_version_that_is_not_a_whole_number(tmp_path: Path, version: Any) -> None:
    # True == 1 was accepted and recorded as "version": true, after which every release call failed
    repo = _repo(tmp_path)
    before = _snapshot(repo)
    with pytest.raises(ReleaseError, match=r"version must be a whole number >= 1 .*got"):
        promote(repo, "scorer", version)
    assert _snapshot(repo) == before and not (repo / RELEASES_FILE).exists()
    list_releases(repo)  # still readable


@pytest.mark.parametrize("version", [True, 2.0, "2"])
def test_pin_refuses_a_version_that_is_not_a_whole_number(tmp_path: Path, version: Any) -> None:
    repo = _repo(tmp_path)
    before = _snapshot(repo)
    with pytest.raises(ReleaseError, match=r"version must be a whole number >= 1"):
        pin(repo, "scorer", version)
    assert _snapshot(repo) == before


def test_a_numpy_integer_version_still_promotes(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    change = promote(_repo(tmp_path), "scorer", np.int64(1))
    assert change.version == 1 and type(change.version) is int


def test_a_control_with_a_bad_timeout_or_no_load_is_refused_before_the_config_changes(tmp_path: Path) -> None:
    # the config.pbtxt was rewritten, then a raw TypeError/AttributeError left it on the new version
    repo = _repo(tmp_path)
    before = _snapshot(repo)
    with pytest.raises(ReleaseError, match=r"timeout must be a number of seconds > 0, got 'x'"):
        promote(repo, "scorer", 1, control=TritonControl("127.0.0.1:1", timeout="x"))  # type: ignore[arg-type]
    with pytest.raises(ReleaseError, match=r"control must have a load\(model\) method .*got str"):
        promote(repo, "scorer", 1, control="x")  # type: ignore[arg-type]
    assert _snapshot(repo) == before


@pytest.mark.parametrize("url", [None, 8000])
def test_triton_control_refuses_an_address_that_is_not_a_string(url: Any) -> None:
    with pytest.raises(ReleaseError, match=r"Triton address must be 'host:port' \(a str\)"):
        TritonControl(url)


@pytest.mark.parametrize("model", [None, 5])
def test_a_model_that_is_not_a_name_is_refused(tmp_path: Path, model: Any) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(ReleaseError, match=r"model must be a model name \(str\)"):
        model_releases(repo, model)
    with pytest.raises(ReleaseError, match=r"model must be a model name \(str\)"):
        promote(repo, model, 1)


def test_a_repository_that_is_not_a_path_is_refused() -> None:
    with pytest.raises(ReleaseError, match=r"model repository must be a folder path \(str or Path\), got NoneType"):
        promote(None, "scorer", 1)  # type: ignore[arg-type]
    with pytest.raises(ReleaseError, match=r"model repository must be a folder path"):
        list_releases(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": "scorer"}, r"models must be a list of model names \(str\) or None .*got 'scorer'"),
        ({"models": [None]}, r"models must be a list of model names"),
        ({"models": ["scorer"], "evaluation": "x"}, r"evaluation must be a mapping of JSON values"),
        ({"models": ["scorer"], "evaluation": {"recall": object()}}, r"evaluation must be a mapping of JSON values"),
        ({"models": ["scorer"], "note": 5}, r"note must be a str \(or None\), got 5"),
    ],
)
def test_add_versions_refuses_bad_arguments_before_any_change(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    # models="scorer" was iterated as 's', 'c', ...; a bad evaluation raised after the config was rewritten
    repo = _repo(tmp_path / "serving")
    source = _repo(tmp_path / "new")
    (source / "scorer" / "2" / "weights.bin").write_bytes(b"changed")
    before = _snapshot(repo)
    with pytest.raises(ReleaseError, match=message):
        add_versions(repo, source, **kwargs)
    assert _snapshot(repo) == before
    with pytest.raises(ReleaseError, match=r"source repository must be a folder path"):
        add_versions(repo, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- the package


def test_tritonforge_build_stays_the_function_after_the_submodule_is_imported() -> None:
    # the import system set the package's `build` to the submodule: the second tritonforge.build(...) was
    # "TypeError: 'module' object is not callable"
    code = (
        "import tritonforge, sys\n"
        "first = tritonforge.build\n"
        "from tritonforge.build import BuildReport\n"
        "assert tritonforge.build is first and callable(first), tritonforge.build\n"
        "assert sys.modules['tritonforge.build'].build is first\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------------ spec, build, validate

SPEC = {"name": "x", "models": {"m": {"kind": "embedding", "checkpoint": "random:bert"}}}


@pytest.mark.parametrize("path", [None, 5, SPEC])
def test_load_spec_of_something_that_is_not_a_path_says_so(path: Any) -> None:
    with pytest.raises(SpecError, match=r"load_spec reads a YAML file: give its path \(str or Path\), got"):
        load_spec(path)


def test_build_takes_the_spec_as_data_too(tmp_path: Path) -> None:
    """A spec already loaded (a dict from a config service or a test) was refused with a pointer to parse_spec: the
    build takes it as the file's contents; a bad one is a SpecError naming the field, before any work."""
    report = tritonforge.build(SPEC, tmp_path / "repo")
    assert (report.repo / "embed" / "config.pbtxt").is_file()
    with pytest.raises(SpecError, match=r"models\.m\.max_batch_size"):
        tritonforge.build({**SPEC, "models": {"m": {**SPEC["models"]["m"], "max_batch_size": -1}}}, tmp_path / "r2")
    assert not (tmp_path / "r2").exists()


def test_a_key_given_twice_in_a_spec_file_is_refused(tmp_path: Path) -> None:
    # PyYAML kept the last one silently: a second entry under the same model key replaced the first
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: x\nmodels:\n  m: {kind: embedding, checkpoint: 'random:bert'}\n"
        "  m: {kind: reranker, checkpoint: 'random:cross-encoder'}\n"
    )
    with pytest.raises(SpecError, match=r"(?s)spec.yaml: not valid YAML: .*key 'm' is given twice"):
        load_spec(spec)


def test_yaml_merge_keys_still_load(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: x\nmodels:\n  a: &base {kind: embedding, checkpoint: 'random:bert', max_batch_size: 8}\n"
        "  b: {<<: *base, max_batch_size: 4, ensemble: embed_b}\n"
    )
    loaded = load_spec(spec)
    assert loaded.models["b"].max_batch_size == 4 and loaded.models["a"].max_batch_size == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "GPU"}, r"target='GPU' is not one of 'cpu', 'gpu'"),
        ({"target": 5}, r"target=5 is not one of 'cpu', 'gpu'"),
        ({"progress": 5}, r"progress must be a callable taking one str \(or None\), got int"),
        ({"out": None}, r"out must be the output folder's path \(str or Path\), got NoneType"),
    ],
)
def test_build_refuses_bad_arguments_before_any_work(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    # target="GPU" built a repository whose tritonforge.json said "target": "GPU"
    out = kwargs.pop("out", tmp_path / "repo")
    with pytest.raises(OptionError, match=message):
        tritonforge.build(parse_spec(SPEC), out, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_build_names_an_image_that_is_not_a_string(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"--image: 5 is not an image name \(a str\)"):
        tritonforge.build(parse_spec(SPEC), tmp_path / "repo", image=5)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repo": None}, r"repo must be the model repository's path \(str or Path\), got NoneType"),
        ({"gpus": "8"}, r"gpus='8' must be a whole number of GPUs, 0 to 1024"),
        ({"gpus": 1.5}, r"gpus=1.5 must be a whole number of GPUs"),
        ({"gpus": -1}, r"gpus=-1 must be a whole number of GPUs, 0 to 1024"),
        ({"gpus": 10**9}, r"gpus=1000000000 must be a whole number of GPUs, 0 to 1024"),  # it ran out of memory
        ({"image": 5}, r"--image 5 is not an image name \(a str\)"),
        ({"rate_limit": "execution_count"}, r"rate_limit must be a RateLimit .*got str"),
    ],
)
def test_validate_refuses_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    repo = kwargs.pop("repo", _repo(tmp_path))
    with pytest.raises(OptionError, match=message):
        tritonforge.validate(repo, **kwargs)


# ------------------------------------------------------------------------------------------------------- clients

UNREACHABLE = "127.0.0.1:1"


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"temperature": "hot"}, r"temperature must be a number >= 0, got 'hot'"),
        ({"top_k": "3"}, r"top_k must be an integer >= 0, got '3'"),
        ({"top_k": 1.5}, r"top_k must be an integer >= 0, got 1.5"),
        ({"top_p": "x"}, r"top_p must be in \[0, 1\], got x"),
        ({"seed": 1.5}, r"seed must be in \[0, .*\(an integer\), got 1.5"),
        ({"end_id": 2**40}, r"end_id must be a token id, an integer in \[0, 2147483647\]"),
        ({"pad_id": "2"}, r"pad_id must be a token id"),
        ({"stop_words": "stop"}, r"stop_words must be a list of strings, got 'stop'"),
        ({"stop_words": [1]}, r"stop_words\[0\] is int, not str"),
        ({"bad_words": None}, r"bad_words must be a list of strings, got None"),
        ({"adapter": 5}, r"adapter must be an adapter's name"),
        ({"adapter": "   "}, r"adapter must be an adapter's name"),  # it served the base model, silently
        ({"chat": "yes"}, r"chat must be True or False, got 'yes'"),
        ({"max_token": 5}, r"unknown generation parameter max_token; allowed: adapter, bad_words, chat"),
    ],
)
def test_generation_parameters_are_checked_before_sending(sampling: dict[str, Any], message: str) -> None:
    # raw TypeError/AttributeError, or silently wrong: stop_words="stop" was sent as 's', 't', 'o', 'p'
    with Client(UNREACHABLE, retries=0) as client:
        with pytest.raises(InvalidInputError, match=message):
            client.generate("hi", **sampling)
        with pytest.raises(InvalidInputError, match=message):
            client.stream("hi", **sampling)
        if not sampling.keys() & {"chat", "adapter", "top_k"}:  # rag refuses these itself / top_k is its TOP_K
            with pytest.raises(InvalidInputError, match=message):
                client.rag("q", **sampling)


def test_good_generation_parameters_still_make_the_same_tensors() -> None:
    sampling = Sampling.of({"temperature": 0, "top_k": np.int64(3), "top_p": 1, "seed": 7, "stop_words": ["\n"]})
    inputs = generation_inputs("hi", sampling, stream=False)
    assert inputs["top_k"].dtype == np.int32 and int(inputs["top_k"][0, 0]) == 3
    assert inputs["stop_words"].tolist() == [[b"\n"]] and float(inputs["temperature"][0, 0]) == 0.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.search(["\ud800"]), r"queries\[0\] cannot be encoded as UTF-8"),
        (lambda c: c.rerank("\ud800", ["a"]), r"query cannot be encoded as UTF-8"),
        (lambda c: c.rerank("q", ["a", "\ud800"]), r"passages\[1\] cannot be encoded as UTF-8"),
        (lambda c: c.search(["q"], top_k=2**40), r"top_k must be an integer in \[1, 2147483647\]"),
        (lambda c: c.search(["q"], rerank=True, top_n=2**31), r"top_n must be an integer in \[1, 2147483647\]"),
        (lambda c: c.rag("q", top_k=2**40), r"top_k must be an integer in \[1, 2147483647\]"),
        (lambda c: c.embed(["a", "b"], batch_size="2"), r"batch_size='2' must be an integer >= 1"),
        (lambda c: c.embed(["a", "b"], batch_size=1.5), r"batch_size=1.5 must be an integer >= 1"),
        (lambda c: c.embed(["a"], requests_in_flight=None), r"requests_in_flight=None must be an integer >= 1"),
        (lambda c: c.embed(["a"], timeout="1"), r"timeout='1' must be > 0 seconds"),
        (lambda c: c.infer("m", {"X": np.ones(2, np.float32)}, parameters="p"), r"parameters must be a mapping"),
    ],
)
def test_client_arguments_are_invalid_input_not_a_traceback(call: Any, message: str) -> None:
    # UnicodeEncodeError, numpy's silent int32 wrap (2**40 was sent as 0), TypeError from a comparison
    with Client(UNREACHABLE, retries=0) as client, pytest.raises(InvalidInputError, match=message):
        call(client)


def test_infer_names_a_bad_output_name_or_an_unencodable_string_tensor() -> None:
    with Client(UNREACHABLE, retries=0) as client:
        with pytest.raises(ClientError, match=r"outputs\[0\] must be an output name \(a non-empty str\), got 1"):
            client.infer("m", {"X": np.ones(2, np.float32)}, outputs=[1])  # type: ignore[list-item]
        with pytest.raises(ClientError, match=r"input 'X' element \[1\] cannot be encoded as UTF-8"):
            client.infer("m", {"X": np.array(["a", "\ud800"])})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": "30"}, r"timeout='30' must be > 0 seconds"),
        ({"retries": "3"}, r"retries='3' must be >= 0"),
        ({"backoff": float("nan")}, r"backoff=nan and max_backoff=2.0 must be >= 0 seconds"),
        ({"headers": "x"}, r"headers must be a mapping of header name -> value, got str"),
        ({"headers": {"x-key": 1}}, r"headers must be a mapping of header name -> value \(str -> str\)"),
        ({"tls": "yes"}, r"tls must be a TLSOptions \(or None\), got str"),
        ({"keepalive": {"time_ms": 1}}, r"keepalive must be a KeepAliveOptions, got dict"),
        ({"admin_key": 5}, r"admin_key must be a str \(or None\), got int"),
    ],
)
def test_client_options_of_the_wrong_type_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ClientError, match=message):
        Client(UNREACHABLE, **kwargs)


def test_option_objects_check_their_types() -> None:
    with pytest.raises(ClientError, match=r"retries=None must be >= 0"):
        RetryPolicy(retries=None)  # type: ignore[arg-type]
    with pytest.raises(ClientError, match=r"jitter='a' must be within \[0, 1\]"):
        RetryPolicy(jitter="a")  # type: ignore[arg-type]
    with pytest.raises(ClientError, match=r"KeepAliveOptions: times must be > 0 ms"):
        KeepAliveOptions(time_ms="1")  # type: ignore[arg-type]
    with pytest.raises(ClientError, match=r"timeout='1' must be > 0 seconds"):
        ClientOptions(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ClientError, match=r"KeepAliveOptions: values must be <= 2147483647"):
        KeepAliveOptions(timeout_ms=2**31)
    with pytest.raises(ClientError, match=r"permit_without_calls must be True or False"):
        KeepAliveOptions(permit_without_calls=1)  # type: ignore[arg-type]


def test_option_objects_keep_numpy_whole_numbers_as_int() -> None:
    # gRPC channel arguments and the retry loop take plain ints; a value read from an array must not reach them as
    # numpy.int64
    import numpy as np

    keepalive = KeepAliveOptions(time_ms=np.int64(5000), timeout_ms=np.int32(2000), max_pings_without_data=np.int8(1))
    assert [type(v) for v in (keepalive.time_ms, keepalive.timeout_ms, keepalive.max_pings_without_data)] == [int] * 3
    assert keepalive.time_ms == 5000
    policy = RetryPolicy(retries=np.int64(2))
    assert type(policy.retries) is int and policy.attempts == 3
    with pytest.raises(ClientError, match=r"options must be a ClientOptions \(or None\), got str"):
        Client.from_options(UNREACHABLE, options="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("call", [lambda c: c.generate("hi"), lambda c: c.rag("q"), lambda c: list(c.stream("hi"))])
def test_generation_against_an_unreachable_server_is_a_transient_error(call: Any) -> None:
    # generate and rag raised tritonclient's own "The stream is no longer in valid state" (the real reason,
    # UNAVAILABLE, went to the stream's callback)
    for _ in range(3):
        with Client(UNREACHABLE, retries=0, timeout=5) as client, pytest.raises(TransientError, match="unavailable"):
            call(client)


# ------------------------------------------------------------------------------------ TritonServer's arguments


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"repo": None}, r"repo must be a model repository folder or an object-store URL, not None"),
        ({"repo": ""}, r"repo must be a model repository folder"),
        ({"extra_args": "--log-verbose=1"}, r"extra_args must be a list of strings, not '--log-verbose=1'"),
        ({"extra_args": 5}, r"extra_args must be a list of strings, not 5"),
        ({"extra_args": ["--a", 1]}, r"extra_args must be a list of strings, got \['--a', 1\]"),
        ({"models": "embed"}, r"models must be a list of strings, not 'embed'"),
        ({"models": [1]}, r"models must be a list of strings, got \[1\]"),
        ({"env": "x"}, r"env must be a mapping of strings to strings, not 'x'"),
        ({"backend_config": ["a"]}, r"backend_config must be a mapping of strings to strings"),
        ({"backend_config": {"python,shm": 1}}, r"backend_config must be a mapping of strings to strings"),
        ({"host": ""}, r"host must be an address of this host"),
        ({"http_port": True}, r"http_port=True is not a TCP port \(1\.\.65535\)"),
        ({"grpc_port": "8001"}, r"grpc_port='8001' is not a TCP port"),
        ({"metrics_port": 70000}, r"metrics_port=70000 is not a TCP port"),
        ({"http_port": 8000, "grpc_port": 8000}, r"grpc_port and http_port are both 8000"),
        ({"startup_timeout": 0}, r"startup_timeout=0 must be a number > 0"),
        ({"startup_timeout": "x"}, r"startup_timeout='x' must be a number > 0"),
        ({"exit_timeout": -1}, r"exit_timeout=-1 must be a number >= 0"),
        ({"log_verbose": "x"}, r"log_verbose='x' must be a whole number >= 0"),
        ({"cache_size_bytes": -1}, r"cache_size_bytes=-1 must be a whole number >= 0"),
    ],
)
def test_triton_server_arguments_are_refused_by_name(tmp_path: Path, kwargs: dict[str, Any], says: str) -> None:
    from tritonforge.server import TritonServer

    arguments: dict[str, Any] = {"repo": tmp_path, **kwargs}
    with pytest.raises(ServerError, match=says):
        TritonServer(**arguments)


def test_triton_server_takes_good_arguments(tmp_path: Path) -> None:
    from tritonforge.server import TritonServer

    server = TritonServer(str(tmp_path), models=("embed",), extra_args=["--log-info=true"], env={"A": "1"},
                          backend_config={"python,shm-default-byte-size": "1048576"}, http_port=8000,
                          grpc_port=8001, startup_timeout=1.5, exit_timeout=0, cache_size_bytes=None)
    assert server.models == ("embed",) and server.extra_args == ("--log-info=true",)
    assert TritonServer("s3://bucket/models").repo == "s3://bucket/models"
