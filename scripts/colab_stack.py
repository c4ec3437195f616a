"""Colab-like stack test: install the course the way a Colab notebook does, then run everything.

    python scripts/colab_stack.py [--python PATH] [--tf-dist tensorflow-cpu|tensorflow] [--keep]

Google Colab ships its own TensorFlow, Keras and NumPy (and an old ipykernel/ipywidgets
that its front end depends on). Every notebook's setup cell runs, on Colab only,

    %pip install --quiet "attention-lessons @ git+<REPOSITORY>@<BRANCH>"

and COURSE.md §7 promises that this installs *only this package*: nothing Colab
preinstalled may be upgraded, downgraded or replaced. This script checks that promise
and that the lessons run on such a stack:

1. find a Python 3.13 (``--python``, $COLAB_STACK_PYTHON, pyenv, PATH); without one it
   prints a SKIPPED line and exits 0;
2. build a fresh virtual environment in a temporary folder and install Colab's stack into
   it, TensorFlow and Keras first (COLAB_STACK below: the versions of Colab's published
   ``pip freeze``); only the downloaded wheels (.venv-colab/wheelhouse/) are reused between runs;
3. install this package exactly as the setup cell does, with a ``git+file://`` URL to the
   committed HEAD of this repository standing in for the GitHub URL (uncommitted changes
   are NOT tested);
4. fail if any package Colab preinstalled changed version or disappeared, or if a second
   TensorFlow distribution appeared next to the one Colab has;
5. the portability run: every lesson (notebooks/) and solution (solutions/) notebook of
   that commit, each alone in an empty folder outside the repository (like Colab's
   /content), checked by **strict nbval** against its stored outputs in a kernel of the new
   environment, under the numeric environment of ``scripts/portable.py`` (TensorFlow's
   own kernels instead of oneDNN's, AVX2 at most, one thread): another library stack, other
   kernels and other reduction orders than the machine that stored the outputs, standing in
   for students' other machines. Lesson 00 also runs once with Colab's COLAB_RELEASE_TAG
   set (its doctor's Colab branch), without comparing outputs;
6. run the package's tests (tests/ of that commit, minus EXCLUDED_TESTS: static checks of
   the repository and tests of the local set-up), in the same portable numeric environment,
   against the INSTALLED package: the commit's files are extracted
   without the ``attention_lessons/`` source folder, so the import can only come from
   site-packages (checked and printed);
7. print a summary and exit non-zero on any failure.

Standard library only: it runs with whatever Python runs ``make test`` and talks to the
new environment through subprocesses. Logs of the last run are kept in
``.venv-colab/last-run/`` and the stack's wheels in ``.venv-colab/wheelhouse/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import ast
import glob
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from portable import PORTABLE_ENV  # noqa: E402  (scripts/portable.py: the portability run's variables)

# --------------------------------------------------------------------------- Colab's stack

#: What Colab preinstalls that the course touches, at Colab's versions. Source: Colab's
#: published ``pip freeze`` (github.com/googlecolab/backend-info, pip-freeze.gpu.txt,
#: mid-2026: tensorflow 2.20.0, keras 3.13.2, numpy 2.0.2, ipykernel 6.17.1, ipywidgets
#: 7.7.1). Installed in this order; the TensorFlow distribution comes from --tf-dist.
TF_VERSION = "2.20.0"
COLAB_FIRST = {"keras": "3.13.2"}  # with the TensorFlow distribution, before anything else
COLAB_STACK = {
    "numpy": "2.0.2",  # 2.0.x has no wheels for Python 3.13: see NUMPY_FOR_PYTHON
    "ml-dtypes": "0.5.4",
    "protobuf": "5.29.6",
    "h5py": "3.16.0",
    "scipy": "1.16.3",
    "scikit-learn": "1.6.1",
    "matplotlib": "3.10.0",
    "ipython": "7.34.0",
    "ipykernel": "6.17.1",
    "jupyter-client": "7.4.9",
    "jupyter-core": "5.9.1",
    "traitlets": "5.7.1",
    "tornado": "6.5.1",
    "pyzmq": "26.2.1",
    "ipywidgets": "7.7.1",
    "widgetsnbextension": "3.6.10",  # requires `notebook`: pin Colab's, or pip brings notebook 7 + jupyterlab
    "jupyterlab-widgets": "3.0.16",
    "notebook": "6.5.7",
    "jupyter-server": "2.14.0",
    "nbconvert": "7.17.1",
    "nbclient": "0.10.4",
    "nbformat": "5.10.4",
    "pytest": "8.4.2",
}
#: Colab's NumPy has no wheel for newer Pythons; use the oldest series that has one.
NUMPY_FOR_PYTHON = {(3, 13): "2.1.3"}
COLAB_PIP = "24.1.2"
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-gpu",
                    "tensorflow-macos", "tf-nightly", "tf-nightly-cpu", "intel-tensorflow")

#: Installed after the package and its checks, only to run the notebooks (nbval) and unit tests.
TEST_TOOLS = ["hypothesis>=6.100", "nbval>=0.11"]

#: Test files not run here (`make test` runs them in the course venv): static checks of the
#: repository's files, whose result cannot depend on the Python/TensorFlow stack, and tests
#: of the local set-up that Colab does not have.
EXCLUDED_TESTS = {
    "test_environment.py": "static: pyproject.toml / environment.yml / lock agree",
    "test_hygiene.py": "static: notebook headers, numbering, exercises in sync, file sizes",
    "test_browser.py": "JupyterLab as `make lab` starts it, in Chromium via playwright: not Colab's front end",
    "test_install.py": "builds a wheel from the source tree and installs the lock's versions: `make`'s path, not Colab's",
    "test_docs_commands.py": "static: the README's and instructors' guide's commands, as `make`'s .venv runs them",
    "test_site.py": "the website built with `make`'s tools (Sphinx, MathJax from npm), in Chromium: not Colab's",
    "test_hub.py": "a local JupyterHub with `make`'s tools (jupyterhub, configurable-http-proxy): not Colab's",
}

PROBE_MARK = "COLAB-STACK-PROBE "


# --------------------------------------------------------------------------- small helpers

class Failure(Exception):
    """A check failed; the message says what and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    say(f"\n== {title} " + "=" * max(0, 74 - len(title)))


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(cmd, *, log: Path | None = None, env=None, cwd=None, check=True, timeout=None) -> subprocess.CompletedProcess:
    """Run ``cmd``; its combined output goes to ``log`` (appended) and, on failure, its tail to stdout."""
    done = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(map(str, cmd))}\n{done.stdout}\n[exit {done.returncode}]\n\n")
    if check and done.returncode != 0:
        tail = "\n".join(line for line in done.stdout.splitlines()
                         if "is ignored: it is neither a file nor a directory" not in line)[-4000:]
        raise Failure(f"command failed (exit {done.returncode}): {' '.join(map(str, cmd))}\n{textwrap.indent(tail, '    ')}")
    return done


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True).stdout.strip()


# --------------------------------------------------------------------------- step 1: Python

def find_python(explicit: str | None, version: tuple[int, int]) -> tuple[str | None, list[str]]:
    """The first working interpreter of ``version``; also the candidates that were tried."""
    want = f"{version[0]}.{version[1]}"
    candidates = []
    if explicit:
        candidates.append(explicit)
    if os.environ.get("COLAB_STACK_PYTHON"):
        candidates.append(os.environ["COLAB_STACK_PYTHON"])
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv_root / "versions" / f"{want}*" / "bin" / f"python{want}")), reverse=True)
    if shutil.which(f"python{want}"):
        candidates.append(shutil.which(f"python{want}"))
    tried = []
    for cand in dict.fromkeys(candidates):
        env = dict(os.environ)
        if "/shims/" in cand:  # a pyenv shim needs to be told which version to run
            env["PYENV_VERSION"] = next((Path(p).parts[-3] for p in glob.glob(str(pyenv_root / "versions" / f"{want}*" / "bin"))), want)
        try:
            out = subprocess.run([cand, "-c", "import sys, venv, ensurepip; print(sys.version_info[0], sys.version_info[1], sys.executable)"],
                                 capture_output=True, text=True, timeout=60, env=env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tried.append(f"{cand}: {exc}")
            continue
        parts = out.stdout.split(maxsplit=2)
        if out.returncode == 0 and len(parts) == 3 and (int(parts[0]), int(parts[1])) == version:
            return parts[2].strip(), tried
        tried.append(f"{cand}: {(out.stderr or out.stdout).strip().splitlines()[-1:] or 'not ' + want}")
    return None, tried


# --------------------------------------------------------------------------- repository

def repo_state(repo: Path, ref: str) -> dict:
    sha = git(repo, "rev-parse", f"{ref}^{{commit}}")
    branch = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    dirty = [line for line in git(repo, "status", "--porcelain").splitlines() if line.strip()]
    course = git(repo, "show", f"{sha}:attention_lessons/course.py")
    constants = {}
    for node in ast.parse(course).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and isinstance(node.value, ast.Constant):
            constants[node.targets[0].id] = node.value.value
    return {"sha": sha, "branch": branch, "dirty": dirty,
            "repository": constants.get("REPOSITORY"), "branch_in_setup_cell": constants.get("BRANCH")}


def extract_commit(repo: Path, sha: str, dest: Path) -> None:
    """The files of commit ``sha`` (what a GitHub checkout would hold) under ``dest``."""
    data = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", sha], check=True,
                          stdout=subprocess.PIPE).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - our own repository's archive
            tar.extractall(dest)


# --------------------------------------------------------------------------- environment

class Env:
    """The Colab-like virtual environment and how to run things in it."""

    def __init__(self, root: Path, work: Path, logs: Path):
        self.root = root
        self.work = work  # every command runs here: `python -m`/`-c` put the cwd on sys.path
        self.python = root / "bin" / "python"
        self.logs = logs
        self.vars = {k: v for k, v in os.environ.items()
                     if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "JUPYTER_PATH",
                                  "PIP_REQUIRE_VIRTUALENV", "PYENV_VERSION", "TF_CPP_MIN_LOG_LEVEL"}}
        self.vars.update({
            "VIRTUAL_ENV": str(root),
            "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            # Keep Jupyter/IPython/matplotlib state away from the user's own folders.
            "JUPYTER_DATA_DIR": str(work / "home" / "jupyter-data"),
            "JUPYTER_CONFIG_DIR": str(work / "home" / "jupyter-config"),
            "IPYTHONDIR": str(work / "home" / "ipython"),
            "MPLCONFIGDIR": str(work / "home" / "matplotlib"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        })

    def pip(self, *args: str, log: str = "pip.log", check: bool = True):
        return run([self.python, "-m", "pip", *args], log=self.logs / log, env=self.vars, check=check, cwd=self.work)

    def py(self, code: str, *args: str, log: str = "probe.log") -> str:
        return run([self.python, "-c", code, *args], log=self.logs / log, env=self.vars, cwd=self.work).stdout

    def packages(self) -> dict[str, str]:
        out = self.pip("list", "--format=json", log="freeze.log").stdout
        return {norm(p["name"]): p["version"] for p in json.loads(out[out.index("["):])}

    def requirers(self, names: set[str]) -> dict[str, list[str]]:
        """For each of ``names``: the installed distributions that require it (extras ignored)."""
        code = textwrap.dedent("""
            import json, re, sys
            from importlib import metadata
            wanted = set(json.loads(sys.argv[1]))
            found = {n: [] for n in wanted}
            for dist in metadata.distributions():
                for req in dist.requires or []:
                    if "extra ==" in req.replace("extra==", "extra =="):
                        continue
                    name = re.sub(r"[-_.]+", "-", re.match(r"\\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)).lower()
                    entry = f"{dist.metadata['Name']} ({req.strip()})"
                    if name in wanted and entry not in found[name]:
                        found[name].append(entry)
            print(json.dumps(found))
        """)
        return json.loads(self.py(code, json.dumps(sorted(names))).strip().splitlines()[-1])


def build_environment(python: str, work: Path, logs: Path, tf_dist: str,
                      wheelhouse: Path | None) -> tuple[Env, dict[str, str]]:
    """A fresh virtual environment holding Colab's stack, TensorFlow and Keras installed first.

    With ``wheelhouse``, the stack's wheels are downloaded there once (keyed by the exact
    requirements) and later runs install them from it without an index: the install is
    still fresh every run, only the ~400 MB download is saved (pip's own HTTP cache may be
    disabled by the index, as it is behind some mirrors).
    """
    env_dir = work / "venv"
    run([python, "-m", "venv", env_dir], log=logs / "venv.log", cwd=work)
    env = Env(env_dir, work, logs)
    version = tuple(int(x) for x in env.py("import sys; print(*sys.version_info[:2])").split())
    stack = dict(COLAB_STACK, numpy=NUMPY_FOR_PYTHON.get(version, COLAB_STACK["numpy"]))
    first = [f"{tf_dist}=={TF_VERSION}"] + [f"{n}=={v}" for n, v in COLAB_FIRST.items()]
    rest = [f"{n}=={v}" for n, v in stack.items()]
    env.pip("install", "--quiet", f"pip=={COLAB_PIP}")
    source: list[str] = []
    if wheelhouse is not None:
        key = json.dumps({"python": list(version), "requirements": first + rest})
        folder = wheelhouse / f"cp{version[0]}{version[1]}-{tf_dist}"
        if not (folder / "requirements.json").exists() or (folder / "requirements.json").read_text() != key:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            say(f"  downloading the stack's wheels into {folder} (once)")
            env.pip("download", "--quiet", "--only-binary=:all:", "-d", str(folder), *first, *rest)
            (folder / "requirements.json").write_text(key)
        source = ["--no-index", "--find-links", str(folder)]
    say(f"  pip install {' '.join(first)}")
    env.pip("install", "--quiet", "--only-binary=:all:", *source, *first)
    say(f"  pip install {' '.join(rest)}")
    # TensorFlow and Keras are repeated so that the rest of the stack cannot move them.
    env.pip("install", "--quiet", "--only-binary=:all:", *source, *first, *rest)
    return env, stack


# --------------------------------------------------------------------------- step 4: checks

def compare(before: dict[str, str], after: dict[str, str], tf_dist: str, allowed: set[str]) -> tuple[list[str], list[str], list[str]]:
    """(changed or removed preinstalled packages, new TensorFlow distributions, added packages)."""
    changed = [n for n in sorted(before) if n not in allowed and after.get(n) != before[n]]
    new_tf = [n for n in TF_DISTRIBUTIONS if n in after and n not in before]
    added = [n for n in sorted(after) if n not in before]
    return changed, new_tf, added


# --------------------------------------------------------------------------- step 5: notebooks

NOTEBOOK_RUNNER = textwrap.dedent('''
    """Run in the Colab-like environment: execute notebooks, one JSON line per notebook."""
    import json, sys, time
    from pathlib import Path
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    PROBE = ("import sys, json, attention_lessons\\n"
             "print(%r + json.dumps({'executable': sys.executable, 'prefix': sys.prefix,"
             " 'package': attention_lessons.__file__}))")

    def execute(path, timeout):
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(PROBE))
        from traitlets.config import Config
        config = Config()
        config.KernelManager.transport = "ipc"  # no TCP ports, no "running over TCP without encryption" warning
        config.KernelManager.ip = str(path.parent.resolve() / "kernel")  # absolute: the kernel runs elsewhere
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", startup_timeout=120,
                                resources={"metadata": {"path": str(path.parent)}}, config=config)
        result = {"status": "ok", "cell": None, "error": None, "probe": None, "cells": len(nb.cells) - 1}
        start = time.perf_counter()
        try:
            with client.setup_kernel():
                for index, cell in enumerate(nb.cells):
                    result["cell"] = index
                    client.execute_cell(cell, index)
            result["cell"] = None
        except CellTimeoutError as exc:
            result.update(status="timeout", error=str(exc).strip().splitlines()[-1][:300])
        except DeadKernelError as exc:
            result.update(status="dead kernel", error=str(exc)[:300])
        except CellExecutionError as exc:
            result.update(status="error", error=f"{exc.ename}: {exc.evalue}"[:600])
        except Exception as exc:  # kernel start-up and the like
            result.update(status="runner error", error=f"{type(exc).__name__}: {exc}"[:600])
        result["seconds"] = round(time.perf_counter() - start, 1)
        if result["cell"] is not None:
            cell = nb.cells[result["cell"]]
            result["source"] = cell.source.strip().splitlines()[:3] if cell.source.strip() else []
            result["traceback"] = [
                line for o in cell.get("outputs", []) if o.get("output_type") == "error" for line in o.get("traceback", [])
            ][-12:]
        for o in nb.cells[-1].get("outputs", []):
            if o.get("output_type") == "stream" and %r in o.get("text", ""):
                result["probe"] = json.loads(o["text"].split(%r, 1)[1].splitlines()[0])
        return result

    timeout = int(sys.argv[1])
    for arg in sys.argv[2:]:
        print(json.dumps({"path": arg, **execute(Path(arg), timeout)}), flush=True)
''') % (PROBE_MARK, PROBE_MARK, PROBE_MARK)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
JUNIT_ANSI = re.compile(r"#x1B\[[0-9;]*m")  # the same escapes, as JUnit XML (which cannot hold \x1b) writes them


def where(r: dict) -> str:
    """Which cell failed, 1-based and counting markdown cells, as Jupyter shows them."""
    if r.get("cell") is None:
        return "kernel start-up"
    if r["cell"] >= r["cells"]:
        return "the appended probe cell (import attention_lessons)"
    return f"cell {r['cell'] + 1}/{r['cells']}"


def run_notebooks(env: Env, tree: Path, work: Path, cell_timeout: int, colab_tag: str | None,
                  only: list[str] | None = None) -> list[dict]:
    """Execute notebooks (``only``: these, relative to the tree) without comparing outputs."""
    runner = work / "run_notebooks.py"
    runner.write_text(NOTEBOOK_RUNNER)
    paths, names = [], {}
    for folder in ("notebooks", "solutions"):
        for nb in sorted((tree / folder).glob("*.ipynb")):
            if only is not None and f"{folder}/{nb.name}" not in only:
                continue
            alone = work / "content" / f"{folder}-{nb.stem}"  # an empty folder, like Colab's /content
            alone.mkdir(parents=True)
            shutil.copy2(nb, alone / nb.name)
            paths.append(alone / nb.name)
            names[str(alone / nb.name)] = f"{folder}/{nb.name}"
    kernel_env = dict(env.vars)
    if colab_tag:
        kernel_env["COLAB_RELEASE_TAG"] = colab_tag  # what attention_lessons.device.in_colab() looks at
    results = []
    proc = subprocess.Popen([str(env.python), str(runner), str(cell_timeout), *map(str, paths)], env=kernel_env,
                            stdout=subprocess.PIPE, stderr=open(env.logs / "notebooks.stderr.log", "w"), text=True,
                            cwd=work / "content")
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        r["name"] = names[r["path"]]
        probe_ok = bool(r["probe"]) and Path(r["probe"]["prefix"]).resolve() == env.root.resolve() \
            and "site-packages" in r["probe"]["package"]
        if r["status"] == "ok" and not probe_ok:
            r["status"], r["error"] = "wrong kernel", f"kernel/package not from the Colab-like env: {r['probe']}"
        mark = "ok  " if r["status"] == "ok" else "FAIL"
        say(f"  {mark} {r['seconds']:6.1f} s  {r['name']}" + ("" if r["status"] == "ok" else
                                                             f"  — {r['status']} in {where(r)}: {r['error']}"))
        if r["status"] != "ok" and r.get("cell") is not None:
            for src in r.get("source", []):
                say(f"              | {src}")
            for tb in r.get("traceback", [])[-6:]:
                for tl in ANSI.sub("", tb).splitlines()[-3:]:
                    say(f"              ! {tl[:160]}")
        results.append(r)
    proc.wait()
    if proc.returncode != 0 or len(results) != len(paths):
        raise Failure(f"the notebook runner stopped early (exit {proc.returncode}); see {env.logs / 'notebooks.stderr.log'}")
    return results


# --------------------------------------------------------------------------- step 5b: nbval

#: Appended to each copied notebook: the kernel writes where it found the package (no output,
#: so strict nbval has nothing to compare) and the runner checks it came from the Colab-like env.
NBVAL_PROBE = ("import json, sys, attention_lessons\n"
               "with open({path!r}, 'w') as _f:\n"
               "    json.dump({{'executable': sys.executable, 'prefix': sys.prefix,"
               " 'package': attention_lessons.__file__}}, _f)")


def nbval_reason(text: str) -> str:
    """The telling line of an nbval failure: the output that differs, or the exception."""
    lines = [line.strip() for line in JUNIT_ANSI.sub("", ANSI.sub("", text)).splitlines() if line.strip()]
    picked = [line for line in lines if line.startswith("mismatch")][:1]
    picked += [line for line in lines if re.match(r"^[+-] ", line)][:2]
    picked += [line for line in lines if re.match(r"^\w+(Error|Exception)\b", line)][-1:]
    return (" / ".join(picked) if picked else (lines[0] if lines else "?"))[:300]


def portable_vars(base: dict[str, str]) -> dict[str, str]:
    """``base`` with the portability run's numeric environment (scripts/portable.py)."""
    # TensorFlow's C++ start-up lines go to the kernel's stderr, which nbval compares.
    return dict(base, **PORTABLE_ENV, TF_CPP_MIN_LOG_LEVEL="2")


def run_nbval(env: Env, tree: Path, work: Path, cell_timeout: int, jobs: int = 1) -> list[dict]:
    """Strict nbval of every lesson and solution, each alone in an empty folder, portable env.

    One pytest per notebook, so that each gets its own time and its own list of failing cells.
    The portable environment gives each kernel one thread, so ``jobs`` notebooks run side by side
    (one per core); results are printed in course order as they complete in that order.
    """
    content = work / "nbval"
    jobs_list = []
    for folder in ("notebooks", "solutions"):
        for nb in sorted((tree / folder).glob("*.ipynb")):
            alone = content / f"{folder}-{nb.stem}"  # an empty folder, like Colab's /content
            alone.mkdir(parents=True)
            probe = alone / "probe.json"
            data = json.loads(nb.read_text())
            data["cells"].append({"cell_type": "code", "execution_count": None, "id": "colab-stack-probe",
                                  "metadata": {"tags": ["nbval-ignore-output"]}, "outputs": [],
                                  "source": NBVAL_PROBE.format(path=str(probe))})
            (alone / nb.name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
            jobs_list.append((folder, nb, alone, probe))

    def one(job) -> dict:
        folder, nb, alone, probe = job
        junit = alone / "junit.xml"
        cmd = [env.python, "-m", "pytest", nb.name, "--nbval", "--nbval-current-env",
               "--nbval-sanitize-with", str(tree / "tests" / "sanitize.cfg"),
               f"--nbval-cell-timeout={cell_timeout}", "-o", "addopts=", "-p", "no:cacheprovider",
               "-q", "-rf", f"--junitxml={junit}", "--rootdir", str(alone)]
        start = time.perf_counter()
        # One log per notebook: side-by-side runs must not interleave their output.
        done = run(cmd, log=env.logs / f"nbval-{folder}-{nb.stem}.log", env=portable_vars(env.vars), cwd=alone,
                   check=False)
        seconds = time.perf_counter() - start
        failed = []
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                bad = case.find("failure") if case.find("failure") is not None else case.find("error")
                if bad is not None:
                    failed.append(f"{case.get('name', '?')}: {nbval_reason(bad.text or bad.get('message') or '')}")
        found = json.loads(probe.read_text()) if probe.exists() else None
        status = "ok" if done.returncode == 0 else f"nbval failed (exit {done.returncode})"
        if status == "ok" and not (found and Path(found["prefix"]).resolve() == env.root.resolve()
                                   and "site-packages" in found["package"]):
            status = f"wrong kernel or package: {found}"
        return {"name": f"{folder}/{nb.name}", "status": status, "seconds": round(seconds, 1), "failed": failed,
                "probe": found, "tail": done.stdout.strip().splitlines()[-8:]}

    results = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for r in pool.map(one, jobs_list):
            ok = r["status"] == "ok"
            say(f"  {'ok  ' if ok else 'FAIL'} {r['seconds']:6.1f} s  {r['name']}" + ("" if ok else f"  — {r['status']}"))
            for line in r["failed"][:6]:
                say(f"              ! {line}")
            if not ok and not r["failed"]:
                say(textwrap.indent("\n".join(r["tail"]), "              | "))
            results.append({k: v for k, v in r.items() if k != "tail"})
    return results


# --------------------------------------------------------------------------- step 6: tests

PYTEST_PROBE = textwrap.dedent("""
    import json, os, sys

    def pytest_sessionfinish(session, exitstatus):
        mod = sys.modules.get("attention_lessons")
        with open(os.environ["COLAB_STACK_PROBE_OUT"], "w") as f:
            json.dump({"package": getattr(mod, "__file__", None), "executable": sys.executable,
                       "prefix": sys.prefix}, f)
""")


def run_tests(env: Env, tree: Path, work: Path) -> dict:
    shutil.rmtree(tree / "attention_lessons")  # the import can only come from site-packages now
    probe_dir = work / "pytest-probe"
    probe_dir.mkdir()
    (probe_dir / "colab_stack_probe.py").write_text(PYTEST_PROBE)
    junit, probe_out = work / "junit.xml", work / "pytest-probe.json"
    vars_ = dict(portable_vars(env.vars), PYTHONPATH=str(probe_dir), COLAB_STACK_PROBE_OUT=str(probe_out))
    cmd = [env.python, "-m", "pytest", "tests", "-o", "addopts=", "-p", "no:cacheprovider", "-p", "colab_stack_probe",
           "-q", "-rfE", "--durations=5", "--continue-on-collection-errors", f"--junitxml={junit}"]
    cmd += [f"--ignore=tests/{name}" for name in EXCLUDED_TESTS]
    start = time.perf_counter()
    done = run(cmd, log=env.logs / "pytest.log", env=vars_, cwd=tree, check=False)
    seconds = time.perf_counter() - start
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        root = ET.parse(junit).getroot()
        for suite in ([root] if root.tag == "testsuite" else root.findall("testsuite")):
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    probe = json.loads(probe_out.read_text()) if probe_out.exists() else {}
    tail = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))
            or re.match(r"^=+ .*(passed|failed|error)", line)]
    return {"exit": done.returncode, "seconds": round(seconds, 1), "counts": counts, "probe": probe, "tail": tail,
            "output": done.stdout}


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", help="interpreter to use (default: find python3.13)")
    parser.add_argument("--python-version", default="3.13", help="Python version Colab runs (default 3.13)")
    parser.add_argument("--tf-dist", default="tensorflow-cpu", choices=["tensorflow-cpu", "tensorflow"],
                        help="TensorFlow distribution standing in for Colab's (default tensorflow-cpu: smaller, "
                             "and it also proves the package does not insist on the name `tensorflow`; "
                             "Colab itself has `tensorflow`)")
    parser.add_argument("--repo", type=Path, help="repository to install (default: the one holding this script)")
    parser.add_argument("--ref", default="HEAD", help="commit to install and test (default HEAD)")
    parser.add_argument("--allow-change", action="append", default=[], metavar="NAME",
                        help="a preinstalled package the install may change (repeatable; say why in the Makefile)")
    parser.add_argument("--cell-timeout", type=int, default=300, help="seconds per notebook cell")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="notebooks checked side by side in the portability run (each kernel has one "
                             "thread there; default: 2, or 1 on a one-core machine)")
    parser.add_argument("--no-colab-tag", action="store_true",
                        help="do not set COLAB_RELEASE_TAG for the notebooks (Colab sets it)")
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--no-wheelhouse", action="store_true",
                        help="download Colab's stack from the index instead of .venv-colab/wheelhouse/")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (virtual environment and copies)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    version = tuple(int(x) for x in args.python_version.split("."))
    python, tried = find_python(args.python, version)
    if python is None:
        say(f"SKIPPED: python{args.python_version} not available — the Colab-like stack was NOT tested "
            f"(install it, e.g. `pyenv install {args.python_version}`, or pass --python).")
        for t in tried:
            say(f"  tried {t}")
        return 0

    repo = (args.repo or Path(git(Path(__file__).resolve().parent, "rev-parse", "--show-toplevel"))).resolve()
    state = repo_state(repo, args.ref)
    logs = repo / ".venv-colab" / "last-run"
    ignored = subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", str(logs / "x")]).returncode == 0
    work = Path(tempfile.mkdtemp(prefix="colab-stack-"))
    if not ignored:
        logs = work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)

    failures: list[str] = []
    times: dict[str, float] = {}
    summary: dict = {"python": python, "tf_dist": args.tf_dist, "commit": state["sha"]}
    try:
        section("Colab-like stack test")
        say(f"Python       {python}")
        say(f"Repository   {repo} @ {state['sha'][:12]} ({state['branch']})")
        if state["dirty"]:
            say(f"NOTE         {len(state['dirty'])} uncommitted change(s) are NOT part of this test "
                f"(it installs and runs commit {state['sha'][:12]}; commit first to test them).")
        say(f"Work folder  {work}{' (kept)' if args.keep else ' (removed at the end)'}")
        say(f"Logs         {logs}")

        # ---- step 2: the Colab-like base
        section(f"1/5 Colab's preinstalled stack ({args.tf_dist} {TF_VERSION}, keras {COLAB_FIRST['keras']} first)")
        t = time.perf_counter()
        wheelhouse = None if args.no_wheelhouse or not ignored else repo / ".venv-colab" / "wheelhouse"
        env, stack = build_environment(python, work, logs, args.tf_dist, wheelhouse)
        before = env.packages()
        times["build stack"] = time.perf_counter() - t
        key = [args.tf_dist, "keras", "numpy", "ml-dtypes", "protobuf", "ipykernel", "ipywidgets"]
        say("  " + "  ".join(f"{n} {before.get(n, '-')}" for n in key))
        (logs / "freeze-before.json").write_text(json.dumps(before, indent=1, sort_keys=True))
        summary["before"] = {n: before.get(n) for n in key}

        # ---- step 3: the setup cell's install
        section("2/5 the setup cell's install")
        url = f"git+file://{repo}@{state['sha']}"
        requirement = f"attention-lessons @ {url}"
        say(f"  setup cell:  %pip install --quiet \"attention-lessons @ git+{state['repository']}@{state['branch_in_setup_cell']}\"")
        say(f"  stand-in:    pip install --quiet \"{requirement}\"")
        t = time.perf_counter()
        env.pip("install", "--quiet", requirement, log="install.log")
        times["install package"] = time.perf_counter() - t
        after = env.packages()
        (logs / "freeze-after.json").write_text(json.dumps(after, indent=1, sort_keys=True))
        summary["after"] = {n: after.get(n) for n in key}

        # ---- step 4: nothing Colab had may change
        section("3/5 was Colab's stack kept?")
        changed, new_tf, added = compare(before, after, args.tf_dist, {norm(n) for n in args.allow_change})
        # Who asked for each change: this package, or something the install added or changed.
        culprits = {"attention-lessons", *added, *changed}
        why = {n: [r for r in reqs if norm(r.split(" (")[0]) in culprits]
               for n, reqs in env.requirers(set(changed) | set(new_tf)).items()}
        for name in new_tf:
            msg = (f"a second TensorFlow appeared: {name} {after[name]} next to {args.tf_dist} {before[args.tf_dist]} "
                   f"(required by {', '.join(why.get(name)) or '?'})")
            failures.append(msg)
            say(f"  FAIL {msg}")
        for name in changed:
            msg = (f"{name} {before[name]} -> {after.get(name, 'removed')} "
                   f"(required by {', '.join(why.get(name, [])) or '?'})")
            failures.append(f"Colab's {msg}")
            say(f"  FAIL {msg}")
        if not changed and not new_tf:
            say(f"  ok   no preinstalled package changed ({len(before)} checked); "
                f"TensorFlow {after.get(args.tf_dist)}, Keras {after.get('keras')}, NumPy {after.get('numpy')} kept")
        elif new_tf or set(changed) & {args.tf_dist, "keras", "numpy"}:
            say("  NOTE the notebooks and tests below run on this CHANGED stack, not on Colab's.")
        say(f"  added {len(added)}: {', '.join(f'{n} {after[n]}' for n in added)}")
        summary["changed"], summary["new_tf"], summary["added"] = changed, new_tf, added

        tree = work / "tree"
        extract_commit(repo, state["sha"], tree)

        # The test tools (nbval, hypothesis) come before the notebooks: strict nbval compares them.
        snapshot = env.packages()
        env.pip("install", "--quiet", *TEST_TOOLS, log="install-test-tools.log")
        now = env.packages()
        tools_changed = [n for n in snapshot if now.get(n) != snapshot[n]]
        if tools_changed:
            failures.append(f"installing the test tools changed {tools_changed}: the checks ran on a changed stack")

        # ---- step 5: the portability run (strict nbval, portable numeric environment)
        if args.skip_notebooks:
            section("4/5 notebooks: skipped (--skip-notebooks)")
        else:
            section("4/5 portability run: strict nbval of every notebook, each alone in an empty folder")
            say("  numeric environment (scripts/portable.py): "
                + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items()))
            t = time.perf_counter()
            results = run_nbval(env, tree, work, args.cell_timeout, args.jobs)
            if not args.no_colab_tag:
                # The doctor's Colab branch, which strict nbval cannot compare (it prints Colab's notes).
                tagged = run_notebooks(env, tree, work, args.cell_timeout, "colab-stack-test",
                                       only=["notebooks/00_start_here.ipynb"])
                for r in tagged:
                    r["name"] += " (COLAB_RELEASE_TAG set, outputs not compared)"
                    if r["status"] != "ok":
                        failures.append(f"{r['name']}: {r['status']} in {where(r)}: {r['error']}")
                results += tagged
            times["notebooks"] = time.perf_counter() - t
            ok = [r for r in results if r["status"] == "ok"]
            if results and results[0].get("probe"):
                say(f"  kernel: {results[0]['probe']['executable']}; package: {results[0]['probe']['package']}")
            for r in results:
                if r["status"] != "ok" and "COLAB_RELEASE_TAG" not in r["name"]:
                    failures.append(f"{r['name']}: {r['status']}: " + "; ".join(r.get("failed", [])[:3]))
            summary["notebooks"] = {r["name"]: {"seconds": r["seconds"], "status": r["status"]} for r in results}
            say(f"  {len(ok)}/{len(results)} notebooks passed")

        # ---- step 6: unit tests against the installed package
        if args.skip_tests:
            section("5/5 tests: skipped (--skip-tests)")
        else:
            section("5/5 the package's tests against the installed package, portable numeric environment")
            t = time.perf_counter()
            say(f"  not run: {', '.join(f'{k} ({v})' for k, v in EXCLUDED_TESTS.items())}")
            result = run_tests(env, tree, work)
            times["tests"] = time.perf_counter() - t
            c = result["counts"]
            package = result["probe"].get("package") or "?"
            say(f"  attention_lessons imported from {package}")
            if "site-packages" not in package or not package.startswith(str(env.root)):
                failures.append(f"the tests imported attention_lessons from {package}, not from the Colab-like env")
            for line in result["tail"]:
                say(f"  {line}")
            passed = c["tests"] - c["failures"] - c["errors"] - c["skipped"]
            say(f"  {passed} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped "
                f"in {result['seconds']:.0f} s (exit {result['exit']})")
            if result["exit"] != 0:
                failures.append(f"pytest: {c['failures']} failed, {c['errors']} errors (exit {result['exit']}); "
                                f"see {logs / 'pytest.log'}")
            summary["tests"] = dict(c, passed=passed, exit=result["exit"], seconds=result["seconds"])
    except Failure as exc:
        failures.append(str(exc))
        say(f"\nFAIL {exc}")
    except KeyboardInterrupt:
        failures.append("interrupted")
    finally:
        if not args.keep:
            t = time.perf_counter()
            shutil.rmtree(work, ignore_errors=True)
            times["clean up"] = time.perf_counter() - t
        total = time.perf_counter() - t0

    # ---- summary
    section("summary")
    before, after = summary.get("before", {}), summary.get("after", {})
    if before:
        say(f"  {'package':<16} {'Colab had':<12} {'after setup cell':<16}")
        for name in before:
            mark = "" if before[name] == after.get(name) else "  <- CHANGED"
            say(f"  {name:<16} {before[name] or '-':<12} {after.get(name) or '-':<16}{mark}")
        for name in summary.get("new_tf", []):
            say(f"  {name:<16} {'-':<12} {after.get(name) or 'installed':<16}  <- SECOND TENSORFLOW")
    if summary.get("notebooks"):
        nb_total = sum(v["seconds"] for v in summary["notebooks"].values())
        say(f"  notebooks: {sum(v['status'] == 'ok' for v in summary['notebooks'].values())}/{len(summary['notebooks'])} ok, "
            f"{nb_total:.0f} s in all")
    if summary.get("tests"):
        c = summary["tests"]
        say(f"  tests: {c['passed']} passed, {c['failures']} failed, {c['errors']} errors, {c['skipped']} skipped")
    say("  time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; total {total:.0f} s")
    summary.update(times={k: round(v, 1) for k, v in times.items()}, total_seconds=round(total, 1), failures=failures)
    (logs / "summary.json").write_text(json.dumps(summary, indent=1))
    if failures:
        say(f"\nCOLAB-LIKE STACK: FAILED ({len(failures)})")
        for f in failures:
            say(f"  - {f.splitlines()[0]}")
        return 1
    say(f"\nCOLAB-LIKE STACK: OK (Python {'.'.join(map(str, version))}, {args.tf_dist} {TF_VERSION}, "
        f"commit {state['sha'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
