"""The project's own promises: one place for versions, README commands that CI really runs."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_wraps_the_same_pip_install():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = [d for d in deps if isinstance(d, dict)]
    # Python agrees with requires-python; conda installs nothing else that could carry a version.
    python = next(d for d in conda if d.startswith("python"))
    major_minor = python.split("=")[1]
    assert f">={major_minor}" in pyproject()["project"]["requires-python"]
    assert sorted(conda) == sorted([python, "pip"])
    # pip installs this project with the dev extra, and nothing pinned beside it.
    assert pip == [{"pip": ["-e .[dev]"]}]
    assert "dev" in pyproject()["project"]["optional-dependencies"]


def test_torch_is_pinned_exactly():
    deps = pyproject()["project"]["dependencies"]
    assert "torch==2.13.0" in deps  # any other spec pulls GBs of CUDA packages on CPU machines


def readme_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    first, second = readme_commands()
    assert "\n" not in first and "\n" not in second
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert second in ci, f"{second!r} is not a line of .ci/run"


def test_run_results_are_not_ignored_by_git():
    """results/runs/ holds the committed run results; only the top-level runs/ is ignored."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    # runs/ may be a link to a disk that outlives the checkout (book/howto.md); git will not look
    # below a link ("beyond a symbolic link"), so then the link itself is what must be ignored.
    local = "runs" if (ROOT / "runs").is_symlink() else "runs/ml-1m-tiny/sft-seed0/config.json"
    probe = ["results/runs/ml-1m-tiny/sft-seed0/config.json", local]
    out = subprocess.run(["git", "check-ignore", *probe], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert out == [local]
