"""The two set-up files agree: environment.yml (conda users) installs what pyproject.toml declares."""

from __future__ import annotations

import re

import tomllib
import yaml

from tests.conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert any(line.startswith("-e .") for line in pip_section), "environment.yml must install the package itself"
    pins = {_name(line): line for line in pip_section if not line.startswith("-")}
    constraints = {_name(line): line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
    for name in ("torch", "torchvision"):
        assert pins[name].replace(" ", "") == constraints[name], f"{name}: environment.yml and constraints.txt differ"
    declared = {_name(d) for d in project["dependencies"]}
    assert set(pins) <= declared, ("environment.yml pins packages pyproject.toml does not declare: "
                                   f"{set(pins) - declared}")
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert "3.11" in python


def test_console_script_and_ci():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["clipseg-lab"] == "clipseg_lab.cli:main"
    assert "make test" in (REPO / ".ci" / "run").read_text()
