"""Files and options a user names wrongly: a one-line error naming what is wrong, no traceback, no work wasted
(found by a bad-input audit of every command)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tritonforge.cli import app
from tritonforge.errors import DeployError, SpecError, TritonForgeError

ENV = {"COLUMNS": "200"}


def _unreadable_files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "folder").mkdir()
    (tmp_path / "latin1.txt").write_bytes("caf\xe9: 1\n".encode("latin-1"))
    return {"a folder, not a file": tmp_path / "folder", "not UTF-8 text": tmp_path / "latin1.txt",
            "no such file": tmp_path / "missing.yaml"}


def test_a_spec_that_cannot_be_read_is_a_spec_error(tmp_path: Path) -> None:
    from tritonforge.demo import demo_spec
    from tritonforge.spec import load_spec

    for reason, path in _unreadable_files(tmp_path).items():
        for read in (load_spec, demo_spec):
            with pytest.raises(SpecError) as caught:
                read(path)
            assert [(p.where, p.message) for p in caught.value.problems] == [(str(path), reason)]
        result = CliRunner().invoke(app, ["build", str(path), "-o", str(tmp_path / "out")], env=ENV)
        assert result.exit_code == 1 and reason in result.output and result.exception is not None
        assert not isinstance(result.exception, (OSError, UnicodeDecodeError))
    assert not (tmp_path / "out").exists()


def test_a_questions_file_that_cannot_be_read(tmp_path: Path) -> None:
    from tritonforge.quality import QualityError, load_questions

    for reason, path in _unreadable_files(tmp_path).items():
        with pytest.raises(QualityError, match=f"questions file {path}: {reason}"):
            load_questions(path)
        result = CliRunner().invoke(app, ["quality", "--questions", str(path), "--url", "127.0.0.1:1"], env=ENV)
        assert result.exit_code == 1 and reason in result.output


def test_the_default_questions_are_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonforge.demo import example_spec
    from tritonforge.quality import load_questions

    monkeypatch.chdir(tmp_path)
    assert len(load_questions(example_spec("data/questions.jsonl", "--questions"))) > 0


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--json", "{folder}", "is a folder; give a file path"),
        ("--plot", "{folder}", "is a folder; give a file path"),
        ("--plot", "{tmp}/chart.xyz", "give a .png file name"),
        ("--json", "{tmp}/afile.txt/out.json", "cannot be written"),
    ],
)
def test_bench_refuses_an_output_it_could_not_write_before_benchmarking(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile.txt").write_text("x")
    path = value.format(folder=tmp_path / "folder", tmp=tmp_path)
    # the server address is unreachable: reaching it would be a different error, after the option check
    result = CliRunner().invoke(app, ["bench", "--model", "m", "--url", "127.0.0.1:1", option, path], env=ENV)
    assert result.exit_code == 2
    assert says in result.output


def test_a_malformed_endpoint_url_is_a_deploy_error() -> None:
    pytest.importorskip("boto3", reason="the deploy extra")
    from tritonforge.deploy.object_store import parse_object_store_url, s3_client

    with pytest.raises(DeployError, match="--endpoint-url 'bogus'"):
        s3_client(parse_object_store_url("s3://bucket/prefix"), "bogus")
    assert issubclass(DeployError, TritonForgeError)


@pytest.mark.parametrize("image", ["bogus", "nvcr.io/nvidia/tritonserver", "tritonserver:", "a b:1"])
def test_an_untagged_serving_image_is_refused_everywhere_it_is_taken(image: str, tmp_path: Path) -> None:
    from tritonforge.errors import OptionError
    from tritonforge.spec import parse_spec
    from tritonforge.validator import validate

    says = f"{image!r}: give a tagged image"
    with pytest.raises(SpecError, match="image: " + re.escape(says)):
        parse_spec({"name": "x", "image": image, "models": {"e": {"kind": "embedding", "checkpoint": "c"}}})
    spec = parse_spec({"name": "x", "models": {"e": {"kind": "embedding", "checkpoint": "c"}}})
    with pytest.raises(SpecError, match="--image: " + re.escape(says)):
        spec.with_overrides(image=image)
    with pytest.raises(OptionError, match="--image " + re.escape(says)):
        validate(tmp_path, image=image)
    assert parse_spec({"name": "x", "image": "registry.local/triton:custom-1", "models": spec.model_dump()["models"]})


def test_checks_take_an_ngc_tag_alone_but_a_deployment_needs_a_whole_name(tmp_path: Path) -> None:
    from tritonforge.trtllm.images import image_name_problem
    from tritonforge.validator import validate

    validate(tmp_path, image="24.12-trtllm-python-py3")  # the release is known: no OptionError
    assert image_name_problem("24.12-trtllm-python-py3") is None
    assert image_name_problem("24.12-trtllm-python-py3", pullable=True) is not None
    assert image_name_problem("nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3", pullable=True) is None


@pytest.mark.parametrize("image", ["nvcr.io/nvidia/tritonserver:26.07-trtlm-python-py3", "26.07-trtlm-python-py3"])
def test_a_misspelt_ngc_flavour_is_refused_before_it_changes_what_is_built(image: str, tmp_path: Path) -> None:
    """'-trtlm-python-py3' was taken for an unknown flavour: the gpu build silently chose ONNX Runtime for the
    encoder, which the intended -trtllm-python-py3 image cannot load (new-user audit)."""
    from tritonforge.spec import SpecError, parse_spec
    from tritonforge.trtllm.images import image_name_problem
    from tritonforge.validator import OptionError, validate

    says = "NVIDIA publishes no tritonserver flavour '-trtlm-python-py3'; did you mean 26.07-trtllm-python-py3?"
    assert says in (image_name_problem(image) or "")
    with pytest.raises(SpecError, match=re.escape(says)):
        parse_spec({"name": "x", "image": image, "models": {"e": {"kind": "embedding", "checkpoint": "c"}}})
    with pytest.raises(OptionError, match=re.escape(says)):
        validate(tmp_path, image=image)


@pytest.mark.parametrize("image", [
    "nvcr.io/nvidia/tritonserver:24.05-py3-min",  # NVIDIA's other flavours: real, not checked, not refused
    "nvcr.io/nvidia/tritonserver:23.04-tf2-python-py3",
    "nvcr.io/nvidia/tritonserver:26.07-py3",
    "registry.example.com/team/triton:26.07-trtlm-python-py3",  # another repository's tags are its own
])
def test_other_flavours_and_other_repositories_are_not_taken_for_typos(image: str) -> None:
    from tritonforge.trtllm.images import image_name_problem

    assert image_name_problem(image) is None and image_name_problem(image, pullable=True) is None


def test_printed_text_is_never_read_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Errors carry Triton's log and users' names, the demo prints model output: Rich markup parsing dropped
    "[libprotobuf ERROR ...]" from messages and raised MarkupError on "[/code]"."""
    from tritonforge import cli
    from tritonforge.errors import ServerError

    message = "m/config.pbtxt: [libprotobuf ERROR a.cc:12] Expected '}' near [/code] and [bold]x[/bold]"
    with pytest.raises(Exception) as caught:
        cli._fail(ServerError(message))
    assert type(caught.value).__name__ == "Exit"
    cli.console.print(f"generate: {'see [/code] here'!r}")
    out, err = capsys.readouterr()
    assert err == f"error: {message}\n" and out == "generate: 'see [/code] here'\n"
    long = "x" * 300
    cli.err_console.print(cli.styled("bold red", "error:", f" {long}"))
    assert capsys.readouterr().err == f"error: {long}\n"  # not wrapped at the console's width


def test_validate_refuses_an_empty_repository_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an empty (valid) folder: "" taken for it exited 0
    result = CliRunner().invoke(app, ["validate", ""], env=ENV)
    assert result.exit_code == 1, result.output
    assert "repo: '' is not a path: give the model repository's folder ('.' for the current one)" in result.output
    assert "valid:" not in result.output


def _path_parameters() -> list[tuple[str, str, object]]:
    """(command, parameter, its typer ParameterInfo) for every Path argument and option of every command."""
    import typing

    import typer

    def commands(typer_app: typer.Typer, prefix: str) -> list[tuple[str, object]]:
        found = [(f"{prefix}{c.name or c.callback.__name__}", c.callback) for c in typer_app.registered_commands]
        for group in typer_app.registered_groups:
            found += commands(group.typer_instance, f"{prefix}{group.name} ")
        return found

    params = []
    for name, callback in commands(app, ""):
        for param, hint in typing.get_type_hints(callback, include_extras=True).items():
            if typing.get_origin(hint) is typing.Annotated and hint.__origin__ in (Path, Path | None):
                info = next(m for m in hint.__metadata__ if isinstance(m, typer.models.ParameterInfo))
                params.append((name, param, info))
    return params


def test_every_path_argument_and_option_goes_through_the_one_parser() -> None:
    from tritonforge.cli_paths import path_arg

    params = _path_parameters()
    # the ones an empty value made the current folder without a word: deploy k8s REPO, push REPO, release add --from
    assert {("deploy k8s", "repo"), ("push", "repo"), ("release add", "source")} <= {(c, p) for c, p, _ in params}
    assert len(params) >= 19, params
    assert not [(c, p) for c, p, info in params if info.parser is not path_arg]  # type: ignore[attr-defined]


EMPTY_PATH = "'' is not a path: name a file or folder ('.' for the current folder)"
IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"


@pytest.mark.parametrize(("args", "names"), [
    (["deploy", "k8s", "", "--image", IMAGE, "--repository-url", "s3://b/p", "-o", "{tmp}/out"], "'repo'"),
    (["deploy", "k8s", "{tmp}", "--image", IMAGE, "--repository-url", "s3://b/p", "-o", ""], "'--out'"),
    (["push", "", "s3://bucket/prefix"], "'repo'"),
    (["release", "add", "--from", "", "--repo", "{tmp}"], "'--from'"),
    (["release", "add", "--from", "{tmp}", "--repo", "{tmp}", "--eval", ""], "'--eval'"),
    (["release", "add", "--from", "{tmp}", "--repo", "{tmp}", "--dataset", ""], "'--dataset'"),
    (["build", "", "-o", "{tmp}/out"], "'spec'"),
    (["build", "{tmp}/spec.yaml", "-o", ""], "'--out'"),
    (["demo", "--out", ""], "'--out'"),
    (["demo", "--spec", ""], "'--spec'"),
    (["serve", "{tmp}", "--tritonserver", ""], "'--tritonserver'"),
    (["serve", "{tmp}", "--gateway", "--splits", ""], "'--splits'"),
    (["gateway", "--api-keys-file", ""], "'--api-keys-file'"),
    (["gateway", "--admin-keys-file", ""], "'--admin-keys-file'"),
    (["bench", "--model", "m", "--url", "127.0.0.1:1", "--data", ""], "'--data'"),
    (["bench", "--model", "m", "--url", "127.0.0.1:1", "--json", ""], "'--json'"),
    (["bench", "--model", "m", "--url", "127.0.0.1:1", "--plot", ""], "'--plot'"),
    (["quality", "--url", "127.0.0.1:1", "--questions", ""], "'--questions'"),
    (["quality", "--url", "127.0.0.1:1", "--json", ""], "'--json'"),
])
def test_an_empty_path_is_refused_by_name_not_taken_for_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], names: str
) -> None:
    """An unset shell variable (`deploy k8s "$REPO"`) rendered, pushed or released the folder the command ran in."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # an empty folder: what "" would have been taken for
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args], env=ENV)
    assert result.exit_code == 2, result.output
    assert EMPTY_PATH in result.output and names in result.output, result.output
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd"]


def test_a_blank_path_is_refused_too_and_a_real_one_passes(tmp_path: Path) -> None:
    from tritonforge.cli_paths import path_arg

    result = CliRunner().invoke(app, ["push", "  ", "s3://bucket/prefix"], env=ENV)
    assert result.exit_code == 2 and "'  ' is not a path" in result.output, result.output
    assert path_arg(".") == Path(".") and path_arg(str(tmp_path)) == tmp_path and path_arg(tmp_path) == tmp_path


@pytest.mark.parametrize("url", ["dns:///triton:8000", "127.0.0.1:8000/v2", "grpc://127.0.0.1:8001", " "])
def test_the_gateways_triton_http_address_is_checked_before_it_starts(url: str) -> None:
    result = CliRunner().invoke(app, ["gateway", "--triton-http", url, "--insecure-no-auth"], env=ENV)
    assert result.exit_code == 2 and "--triton-http" in result.output, result.output


def test_the_gateways_keep_alive_is_a_number_of_seconds_and_reaches_its_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--keep-alive (behind a load balancer, above its idle timeout: uvicorn's 5 s under an ALB's 60 s is 502s)."""
    from tritonforge.gateway import listen as gateway_listen

    for bad in ("0", "-5", "soon", "7200"):
        result = CliRunner().invoke(app, ["gateway", "--keep-alive", bad, "--insecure-no-auth"], env=ENV)
        assert result.exit_code == 2 and "--keep-alive" in result.output, result.output
    made: list[float] = []
    real_init = gateway_listen.GatewayServer.__init__

    def init(self: object, *args: object, **kwargs: object) -> None:
        made.append(kwargs["keep_alive"])  # type: ignore[arg-type]
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway_listen.GatewayServer, "__init__", init)
    monkeypatch.setattr(gateway_listen.GatewayServer, "run", lambda self: None)
    from tritonforge.server import free_port

    ran = CliRunner().invoke(app, ["gateway", "--triton", "127.0.0.1:9", "--port", str(free_port()), "--keep-alive",
                                   "65", "--insecure-no-auth"], env=ENV)
    assert ran.exit_code == 0 and made == [65.0], ran.output
    repo = tmp_path / "repo"
    repo.mkdir()
    alone = CliRunner().invoke(app, ["serve", str(repo), "--gateway-keep-alive", "65"], env=ENV)
    assert alone.exit_code == 2 and "--gateway-keep-alive needs --gateway" in alone.output, alone.output


def test_serve_refuses_flags_that_contradict_each_other_before_starting(tmp_path: Path) -> None:
    """--admin-key with --no-admin-key dropped the key and left the admin APIs open; a --gateway-port equal to a
    Triton port let Triton take it while serve said the gateway was up (found by a CLI audit)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    both = CliRunner().invoke(app, ["serve", str(repo), "--admin-key", "k", "--no-admin-key"], env=ENV)
    assert both.exit_code == 2 and "--admin-key or --no-admin-key, not both" in both.output
    clash = CliRunner().invoke(
        app, ["serve", str(repo), "--http-port", "27999", "--gateway", "--gateway-port", "27999",
              "--insecure-no-auth"], env=ENV)
    assert clash.exit_code == 2 and "27999 is also one of Triton's ports" in clash.output
    alone = CliRunner().invoke(app, ["serve", str(repo), "--gateway-port", "9100"], env=ENV)  # ignored: no gateway
    assert alone.exit_code == 2 and "needs --gateway" in alone.output, alone.output
    huge = CliRunner().invoke(app, ["validate", str(repo), "--gpus", "1000000000"], env=ENV)  # it ran out of memory
    assert huge.exit_code == 2 and "1024" in huge.output


def test_a_log_file_that_cannot_be_written_is_a_server_error(tmp_path: Path) -> None:
    from tritonforge.errors import ServerError
    from tritonforge.server import TritonServer

    (tmp_path / "repo").mkdir()
    with pytest.raises(ServerError, match=r"log_file=.*: cannot be written: Is a directory"):
        TritonServer(tmp_path / "repo", log_file=tmp_path).start()


def test_problem_lines_go_to_stdout_and_the_headline_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """As fail()'s docstring now says (it said everything went to stderr): the problems are the command's findings,
    which users pipe and grep (`validate repo | grep ...`, as linters print theirs)."""
    import typer

    from tritonforge.cli_output import fail
    from tritonforge.errors import Problem, SpecError

    with pytest.raises(typer.Exit):
        fail(SpecError([Problem("spec.yaml", "no such file")]))
    captured = capsys.readouterr()
    assert captured.out == "spec.yaml: no such file\n" and "invalid deployment spec (1 problem)" in captured.err


def test_sigterm_runs_a_commands_cleanup(tmp_path: Path) -> None:
    """A SIGTERMed build left its cache entry's temporary folder behind (swept only after 24 h): SIGTERM now ends a
    command through its cleanup, as Ctrl-C does, with the exit code of a SIGTERM."""
    import signal
    import subprocess
    import sys
    import time

    marker = tmp_path / "cleaned"
    code = (
        "import time\nfrom tritonforge.cli import terminate_like_interrupt\nterminate_like_interrupt()\n"
        f"try:\n    print('ready', flush=True)\n    time.sleep(60)\nfinally:\n    open({str(marker)!r}, 'w').close()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 143
    assert marker.exists()


def test_a_command_run_without_its_extra_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`deploy k8s` on a base install ended in ModuleNotFoundError: No module named 'jinja2' (packaging audit): the
    CLI names the extra to install; a module no extra brings is still the bug it is."""
    from tritonforge import cli

    def missing(name: str) -> Any:
        def run() -> None:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)

        return run

    monkeypatch.setattr(cli, "app", missing("jinja2"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    assert 'this command needs the `deploy` extra (jinja2 is not installed): pip install "tritonforge[deploy]"' in (
        capsys.readouterr().err.replace("\n", ""))
    monkeypatch.setattr(cli, "app", missing("torch.onnx"))
    with pytest.raises(SystemExit):
        cli.main()
    assert "`cpu` extra" in capsys.readouterr().err
    monkeypatch.setattr(cli, "app", missing("not_an_extras_module"))
    with pytest.raises(ModuleNotFoundError):
        cli.main()


def test_the_version_is_the_installed_distributions() -> None:
    import subprocess
    import sys
    from importlib.metadata import version

    import tritonforge

    assert tritonforge.__version__ == version("tritonforge")
    for command in ([sys.executable, "-m", "tritonforge", "--version"],):
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == f"tritonforge {tritonforge.__version__}"
