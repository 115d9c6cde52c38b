"""The wheel users install holds everything the editable checkout has: every tracked file of the folders mapped
into the ``tritonforge`` package (model.py files, templates, data), built without setuptools' warnings (an
importable folder missing from ``packages`` is one setuptools says it will drop; the TOML-table license is refused
from 2027-02-18)."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-v", "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (path,) = out.glob("tritonforge-*.whl")
    return path, build.stdout + build.stderr


def test_the_wheel_holds_every_tracked_file_of_the_package_folders(wheel: tuple[Path, str]) -> None:
    path, _ = wheel
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    in_wheel = set(zipfile.ZipFile(path).namelist())
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    expected = {}
    for file in tracked:
        for package, folder in package_dirs.items():
            if file.startswith(folder + "/"):
                expected[file] = package.replace(".", "/") + file[len(folder):]
                break
    assert len(expected) > 100  # the mapping was read: every source module and data file
    missing = sorted(file for file, target in expected.items() if target not in in_wheel)
    assert not missing, f"tracked files the wheel leaves out: {missing}"


def test_the_build_warns_of_nothing(wheel: tuple[Path, str]) -> None:
    _, log = wheel
    warnings = sorted(set(re.findall(r"site-packages/setuptools/\S+: \w*Warning: [^\n]*", log)))
    assert not warnings, warnings


def test_the_license_is_an_spdx_expression(wheel: tuple[Path, str]) -> None:
    path, _ = wheel
    with zipfile.ZipFile(path) as whl:
        (meta,) = [n for n in whl.namelist() if n.endswith(".dist-info/METADATA")]
        fields = email.message_from_bytes(whl.read(meta))
    assert fields["License-Expression"] == "Apache-2.0"


def test_the_demo_finds_its_examples_in_the_installed_wheel(wheel: tuple[Path, str], tmp_path: Path) -> None:
    """`tritonforge demo` read examples/ from the source checkout only: from a `pip install`, every demo failed
    with "example file 'rag.yaml' not found". The wheel installs them as tritonforge/examples."""
    path, _ = wheel
    zipfile.ZipFile(path).extractall(tmp_path / "site")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import tritonforge.demo as demo\n"
        "spec, _ = demo.demo_spec(demo.example_spec(), stand_in_decoder=True)\n"
        "print(demo.__file__); print(demo.example_spec()); print(sorted(spec.models))\n"
        "print(demo.example_spec('data/questions.jsonl'))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "site")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    module, spec, models, questions = run.stdout.split("\n")[:4]
    site = tmp_path / "site" / "tritonforge"
    assert module == str(site / "demo.py") and spec == str(site / "examples" / "rag.yaml")
    assert models == "['answer', 'chat', 'minilm', 'passages', 'reranker']"
    assert questions == str(site / "examples" / "data" / "questions.jsonl")
