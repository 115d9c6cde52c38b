"""deploy's Python API refuses arguments of the wrong type with a DeployError naming the field or file (never a raw
AttributeError/TypeError, nor pydantic's ValidationError), before anything is written or sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tritonforge.deploy.k8s import DeployOptions, build_values, deploy_k8s
from tritonforge.deploy.object_store import parse_object_store_url, push
from tritonforge.errors import DeployError

IMAGE = "nvcr.io/nvidia/tritonserver:24.12-py3"
URL = "s3://bucket/prefix"
SECRET = "s3-credentials"
CONFIG = (
    'name: "m"\nbackend: "python"\nmax_batch_size: 8\n'
    'input { name: "X" data_type: TYPE_FP32 dims: 4 }\noutput { name: "Y" data_type: TYPE_FP32 dims: 4 }\n'
)


def _repo(root: Path, deploy: Any = None) -> Path:
    """A one-model cpu repository with the tritonforge.json a build writes (``deploy``: its `deploy:` section)."""
    repo = root / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text(CONFIG)
    (repo / "m" / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    info: dict[str, Any] = {"spec": "demo", "target": "cpu"}
    if deploy is not None:
        info["deploy"] = deploy
    (repo / "tritonforge.json").write_text(json.dumps(info))
    return repo


def _options(**kw: Any) -> DeployOptions:
    return DeployOptions(**{"image": IMAGE, "repository_url": URL, "credentials_secret": SECRET, **kw})


def _refused(repo: Any, out: Any, options: Any) -> DeployError:
    with pytest.raises(DeployError) as caught:
        deploy_k8s(repo, out, options)
    if isinstance(out, Path):
        assert not out.exists(), "nothing is written when the input is refused"
    return caught.value


def test_good_options_deploy_as_before(tmp_path: Path) -> None:
    repo = _repo(tmp_path, deploy={"replicas": 2, "autoscaling": {"enabled": False}})
    report = deploy_k8s(repo, tmp_path / "out", _options(name="demo", gateway=False))
    assert "deployment.yaml" in report.files and report.values["replicas"] == 2
    assert deploy_k8s(str(repo), str(tmp_path / "out2"), _options(replicas=3)).values["replicas"] == 3


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("repository_url", None, "--repository-url"),
        ("repository_url", 5, "--repository-url"),
        ("namespace", None, "--namespace"),
        ("replicas", "2", "--replicas"),
        ("replicas", 1.5, "--replicas"),
        ("replicas", True, "--replicas"),
        ("gpus_per_replica", "1", "--gpus"),
        ("name", 5, "--name"),
        ("credentials_secret", 5, "--credentials-secret"),
        ("region", None, "--region"),
        ("gateway", "yes", "--gateway"),
        ("gateway_image", 5, "--gateway-image"),
        ("gateway_api_keys_secret", ["k"], "--gateway-api-keys-secret"),
        ("rate_limit", "execution_count", "--rate-limit"),
    ],
)
def test_an_option_of_the_wrong_type_is_named(tmp_path: Path, field: str, value: Any, flag: str) -> None:
    err = _refused(_repo(tmp_path), tmp_path / "out", _options(**{field: value}))
    (problem,) = err.problems
    assert problem.where == flag
    assert problem.message.startswith(f"DeployOptions.{field} is {value!r} ({type(value).__name__}): give ")


def test_numpy_integers_are_whole_numbers_and_render_as_plain_ints(tmp_path: Path) -> None:
    """A count from numpy (an array, a DataFrame) was refused as 'not an int'; it is taken and stored as an int."""
    import numpy as np
    import yaml

    from tritonforge.deploy.options import option_type_problems

    options = _options(replicas=np.int64(3), gpus_per_replica=np.int32(2))
    assert (options.replicas, options.gpus_per_replica) == (3, 2)
    assert type(options.replicas) is int and type(options.gpus_per_replica) is int
    assert option_type_problems(options) == []
    unscaled = _repo(tmp_path, deploy={"autoscaling": {"enabled": False}})  # with an autoscaler no count is written
    report = deploy_k8s(unscaled, tmp_path / "out", _options(replicas=np.int64(3)))
    assert report.values["replicas"] == 3 and type(report.values["replicas"]) is int
    text = (tmp_path / "out" / "deployment.yaml").read_text()
    assert "numpy" not in text
    deployment = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    for i, bad in enumerate((np.bool_(True), np.float64(3.0), True)):
        (problem,) = _refused(_repo(tmp_path / str(i)), tmp_path / "out2", _options(replicas=bad)).problems
        assert problem.where == "--replicas" and "give a whole number, 1 or more" in problem.message


@pytest.mark.parametrize("image", [None, 5])
def test_an_image_that_is_not_a_str_is_named(tmp_path: Path, image: Any) -> None:
    err = _refused(_repo(tmp_path), tmp_path / "out", _options(image=image))
    assert [p.where for p in err.problems] == ["--image"]
    assert f"{image!r} is not an image name" in err.problems[0].message


def test_every_option_of_the_wrong_type_is_reported_at_once(tmp_path: Path) -> None:
    err = _refused(_repo(tmp_path), tmp_path / "out", _options(image=None, namespace=None, replicas="2", name=5))
    assert [p.where for p in err.problems] == ["--image", "--name", "--namespace", "--replicas"]


def test_options_that_are_not_deploy_options_are_named(tmp_path: Path) -> None:
    err = _refused(_repo(tmp_path), tmp_path / "out", {"image": IMAGE, "repository_url": URL})
    (problem,) = err.problems
    assert problem.where == "options" and "(dict); give DeployOptions(" in problem.message
    with pytest.raises(DeployError, match="options: got None"):
        build_values(_repo(tmp_path / "b"), None)  # type: ignore[arg-type]


def test_repo_and_out_that_are_not_paths_are_named(tmp_path: Path) -> None:
    assert [p.where for p in _refused(None, tmp_path / "out", _options()).problems] == ["repo"]
    assert [p.where for p in _refused(_repo(tmp_path), None, _options()).problems] == ["out"]
    with pytest.raises(DeployError, match="repo: got 5 \\(int\\); give a folder path"):
        build_values(5, _options())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("deploy", "expected"),
    [
        ({"replicas": "x"}, "deploy.replicas: 'x': input should be a valid integer"),
        ({"replicas": 0}, "deploy.replicas: 0: input should be greater than or equal to 1"),
        ({"cpu": "two"}, "deploy.cpu: 'two': "),
        ({"replica": 2}, "deploy.replica: unknown field"),
        ("x", "deploy: 'x': input should be a valid dictionary"),
        ({"rate_limit": "on"}, "deploy.rate_limit: 'on' is not allowed; expected 'off' or 'execution_count'"),
        ({"rate_limit_resources": ["R:1"]}, "deploy.rate_limit_resources: --rate-limit-resource needs --rate-limit="),
        (
            {"rate_limit": "execution_count", "rate_limit_resources": ["R:-1"]},
            "deploy.rate_limit_resources[0]: rate-limit resource 'R': count -1 must be 0 or more",
        ),
    ],
)
def test_a_bad_deploy_section_in_tritonforge_json_names_the_file_and_field(
    tmp_path: Path, deploy: Any, expected: str
) -> None:
    repo = _repo(tmp_path, deploy=deploy)
    err = _refused(repo, tmp_path / "out", _options())
    assert err.problems[0].where == str(repo / "tritonforge.json")
    assert err.problems[0].message.startswith(expected)


@pytest.mark.parametrize("url", [None, 5])
def test_an_object_store_url_that_is_not_a_str_is_a_deploy_error(url: Any) -> None:
    with pytest.raises(DeployError, match=f"repository URL {url!r} \\({type(url).__name__}\\): not an object-store URL"):
        parse_object_store_url(url)


def test_push_names_a_url_or_repository_that_is_not_a_str(tmp_path: Path) -> None:
    pytest.importorskip("botocore")
    repo = _repo(tmp_path)
    with pytest.raises(DeployError, match="repository URL None \\(NoneType\\)"):
        push(repo, None)  # type: ignore[arg-type]
    with pytest.raises(DeployError, match="repository None \\(NoneType\\): not a folder path"):
        push(None, URL)  # type: ignore[arg-type]



# ------------------------------------------------------------------------------------ the rate limiter's flags


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--rate-limit", "on"], "error: --rate-limit 'on': allowed are off, execution_count"),
        (
            ["--rate-limit", "execution_count", "--rate-limit-resource", "R"],
            "error: --rate-limit-resource 'R': expected '<name>:<count>' or '<name>:<count>:<device>' (as tritonserver "
            "takes it)",
        ),
        (
            ["--rate-limit", "execution_count", "--rate-limit-resource", "R:-1"],
            "error: rate-limit resource 'R': count -1 must be 0 or more",
        ),
        (
            ["--rate-limit-resource", "R:1"],
            "error: --rate-limit-resource needs --rate-limit=execution_count: with rate limiting off tritonserver "
            "ignores every resource count; pass both, or neither",
        ),
    ],
)
def test_bad_rate_limit_flags_get_serve_s_one_line_error_and_write_nothing(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    from typer.testing import CliRunner

    from tritonforge.cli import app

    repo, out = _repo(tmp_path), tmp_path / "out"
    env = {"COLUMNS": "300"}
    deploy = ["deploy", "k8s", str(repo), "--image", IMAGE, "--repository-url", URL, "--credentials-secret", SECRET]
    result = CliRunner().invoke(app, [*deploy, "-o", str(out), *flags], env=env)
    assert (result.exit_code, result.output) == (1, says + "\n")
    assert not out.exists()
    # the same flags on serve fail the same way, before any server starts (one RateLimit parses both)
    served = CliRunner().invoke(app, ["serve", str(repo), "--no-admin-key", *flags], env=env)
    assert (served.exit_code, served.output) == (1, says + "\n")


def test_replicas_the_autoscaler_would_undo_and_gateway_flags_without_a_gateway(tmp_path: Path) -> None:
    """Found by a CLI audit: --replicas 10 under an autoscaler keeping 1-4 was rendered and then scaled down at once;
    --replicas past int32 was rendered for the API server to refuse; --gateway-image / --gateway-api-keys-secret
    without --gateway were accepted and ignored."""
    repo = _repo(tmp_path)
    many = _refused(repo, tmp_path / "out", _options(replicas=10))
    assert [p.where for p in many.problems] == ["--replicas"]
    assert "the spec's deploy.autoscaling is enabled" in many.problems[0].message
    within = _refused(repo, tmp_path / "out", _options(replicas=3))  # in range, but the HPA owns the count
    assert [p.where for p in within.problems] == ["--replicas"]
    huge = _refused(repo, tmp_path / "out", _options(replicas=2**31))
    assert "give 1 to 2147483647" in huge.problems[0].message
    stray = _refused(repo, tmp_path / "out", _options(gateway=False, gateway_image="gw:1", gateway_api_keys_secret="k"))
    assert sorted(p.where for p in stray.problems) == ["--gateway-api-keys-secret", "--gateway-image"]
    assert all("needs --gateway" in p.message for p in stray.problems)
    unscaled = _repo(tmp_path / "unscaled", deploy={"autoscaling": {"enabled": False}})
    assert deploy_k8s(unscaled, tmp_path / "ok", _options(replicas=10)).values["replicas"] == 10


def test_an_empty_endpoint_url_is_refused_not_taken_for_aws(tmp_path: Path) -> None:
    """`push --endpoint-url "$ENDPOINT"` with the variable unset sent the repository to AWS instead of the S3
    server the user meant (found by a CLI audit)."""
    with pytest.raises(DeployError, match="--endpoint-url is empty"):
        push(_repo(tmp_path), URL, endpoint_url=" ", client=object())


def test_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    """`re.match` with `$` accepts a trailing newline: every name check is a full match now."""
    from tritonforge.deploy.options import monitor_label_problems

    assert monitor_label_problems(("release=x\n",)) and monitor_label_problems(("team\n=x",))
    from tritonforge.deploy.object_store import parse_object_store_url
    from tritonforge.errors import DeployError

    with pytest.raises(DeployError):
        parse_object_store_url("s3://bucket\n/prefix")


def test_a_repository_folder_that_does_not_exist_is_named_as_such(tmp_path: Path) -> None:
    """It read "tritonforge.json: missing", as if the folder were a repository without its build record (audit)."""
    from tritonforge.deploy.k8s import read_build_info

    with pytest.raises(DeployError, match=r"nope: no such folder: give the repository `tritonforge build` wrote"):
        read_build_info(tmp_path / "nope")
