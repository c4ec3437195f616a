"""environment.yml mirrors pyproject.toml; the lock pins every direct dependency."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _spec(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement[len(_name(requirement)):])


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def conda_requirements() -> dict[str, str]:
    """Every dependency line of environment.yml (conda and pip sections), name → version spec."""
    found = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:", 1)[1].splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z][\w.\-]*)([<>=!~][^#]*)?\s*(#.*)?$", line)
        if m:
            found[m.group(1).lower()] = (m.group(2) or "").strip()
    return found


def test_environment_yml_lists_the_same_runtime_dependencies_as_pyproject():
    conda = conda_requirements()
    for req in pyproject()["dependencies"]:
        assert _name(req) in conda, f"{_name(req)} is in pyproject.toml but not in environment.yml"
        assert conda[_name(req)] == _spec(req), f"{_name(req)}: pyproject {_spec(req)!r} vs environment.yml {conda[_name(req)]!r}"


def test_environment_yml_has_nothing_pyproject_does_not_know():
    extras = pyproject()["optional-dependencies"]
    known = {_name(r) for r in pyproject()["dependencies"]} | {_name(r) for r in extras["lab"] + extras["tensorflow"]}
    extra = set(conda_requirements()) - known - {"python", "pip"}
    assert not extra, f"environment.yml lists {extra}, which pyproject.toml does not"


def test_no_upper_pins_so_colab_keeps_its_tensorflow():
    for req in pyproject()["dependencies"]:
        assert "<" not in req and "==" not in req, req


def test_tensorflow_is_not_a_hard_dependency_but_make_installs_it():
    # Naming `tensorflow` would make pip add a second TensorFlow next to tensorflow-cpu or a
    # CUDA build (scripts/colab_stack.py caught exactly that).
    project = pyproject()
    assert "tensorflow" not in {_name(r) for r in project["dependencies"]}
    assert "tensorflow" in {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert '".[dev]"' in (ROOT / "Makefile").read_text()


def test_lock_pins_every_dependency_exactly():
    lock = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[name.lower().replace("_", "-")] = version
    project = pyproject()
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert _name(req) in lock, f"{_name(req)} is not pinned in requirements/lock.txt"
