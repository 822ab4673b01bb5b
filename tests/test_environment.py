"""The pins: constraints.txt, environment.yml and pyproject.toml agree."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parent.parent


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normal(name)] = version
    return pins


def _requirement_name(spec: str) -> str:
    return _normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])


def test_constraints_pin_the_required_versions():
    pins = _pins()
    assert pins["torch"] == "2.14.1"
    assert pins["torchvision"] == "0.29.1"
    assert pins["jupyter-book"] == "1.0.4.post1"


def test_every_dependency_of_pyproject_is_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    pins = _pins()
    missing = [s for s in specs if _requirement_name(s) not in pins]
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_environment_yml_matches_the_pins():
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pins = _pins()
    listed = {}
    for item in environment["dependencies"]:
        if isinstance(item, dict):
            for spec in item["pip"]:
                if "==" in spec:
                    name, version = spec.split("==")
                    listed[_normal(name)] = version
        elif item.startswith("python="):
            assert item == "python=3.11"
        else:
            name, version = item.split("=")
            listed[_normal(name)] = version
    wrong = {n: (v, pins.get(n)) for n, v in listed.items() if pins.get(n) != v}
    assert not wrong, f"environment.yml differs from constraints.txt: {wrong}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    absent = [s for s in specs if _requirement_name(s) not in listed]
    assert not absent, f"in pyproject.toml but not in environment.yml: {absent}"
