"""The built wheel works on its own: installed into an empty virtual environment, a lesson
runs and a submission is graded from a folder outside the repository.

This catches files that exist in the source tree but not in the package (the grader ships
harvest.py and drivers.py into kernels by reading them from the installed package).
"""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"), str(ROOT)])
    wheels = list((tmp / "dist").glob("attention_lessons-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Only the runtime dependencies (no dev extra), at the tested versions, plus what runs notebooks.
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(ROOT / "requirements" / "lock.txt"), str(wheels[0])])
    outside = tmp / "class"
    outside.mkdir()
    return python, outside


def test_package_is_imported_from_the_wheel_not_the_source_tree(installed):
    python, outside = installed
    done = run([str(python), "-c", "import attention_lessons, sys; print(attention_lessons.__file__)"], cwd=outside)
    assert "site-packages" in done.stdout and str(ROOT) not in done.stdout


def test_a_lesson_runs_outside_the_repository(installed):
    python, outside = installed
    shutil.copy(ROOT / "notebooks" / "03_softmax_weighting.ipynb", outside / "lesson.ipynb")
    code = (
        "import nbformat; from nbclient import NotebookClient; "
        "nb = nbformat.read('lesson.ipynb', 4); "
        "NotebookClient(nb, timeout=300, kernel_name='python3').execute(); "
        "print('cells', len(nb.cells))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    run([str(python), "-c", code], cwd=outside, env=env)


def test_the_installed_grader_grades_a_submission(installed):
    python, outside = installed
    shutil.copy(ROOT / "solutions" / "ex02_softmax.ipynb", outside / "alice_ex02.ipynb")
    grader = python.parent / "attention-lessons"
    run([str(grader), "grade", "alice_ex02.ipynb", "--json", "grades.json"], cwd=outside)
    row = json.loads((outside / "grades.json").read_text())[0]
    assert row["status"] == "ok" and row["score"] == row["max_score"] == 10
