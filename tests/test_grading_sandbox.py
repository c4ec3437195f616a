"""The reference stays out of reach: every route from a submission to the course's own
implementation of the exercise it is graded on leads to a stub, or to nothing.

Each route is a cell added to the untouched ex02 notebook that defines ``softmax``,
``masked_softmax`` and ``divisive_normalization`` from the package's reference (or from a
solution notebook): graded by the batch grader it must score 0. ``test_route_works_without_
the_sandbox`` shows that each route does reach the reference in a plain Python process, so
a zero is the sandbox's doing, not a broken attack. Honest solutions (ex02, and ex06 with
Keras) and the modules an exercise may use still work.

Routes marked ``private_root`` read the real files by path; only the private root file
system (Linux user namespaces, see ``attention_lessons/grading/sandbox.py``) closes them,
and they are skipped where the OS does not allow it. The others are closed by the stripped
package copy alone, everywhere.
"""

import copy
import importlib.util
import json
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attention_lessons.grading import get_exercise, sandbox
from attention_lessons.grading.batch import GradeOptions, grade_many

ROOT = Path(__file__).resolve().parents[1]
PKG = sandbox.package_dir()
REPO = PKG.parent
EDITABLE = any((REPO / name).exists() for name in ("pyproject.toml", ".git"))  # a source checkout, not site-packages
ISOLATED = sandbox.probe().startswith(sandbox.PRIVATE_ROOT)
NEEDS_PRIVATE_ROOT = pytest.mark.skipif(not ISOLATED, reason=f"no private root here: {sandbox.probe()}")

# Each route ends with R_S (the softmax module's names) and R_N (neurons'), which WRAP turns
# into the three answers, as thin functions defined in the notebook (so "own code").
WRAP = '''
def softmax(x, axis=-1, temperature=1.0):
    return R_S["softmax"](x, axis=axis, temperature=temperature)

def masked_softmax(x, mask, axis=-1):
    return R_S["softmax"](x, axis=axis, mask=mask)

def divisive_normalization(drive, sigma, n):
    return R_N["divisive_normalization"](drive, sigma=sigma, n=n)
'''

EXEC_SOURCE = '''
def _run(source):
    ns = {"__name__": "al_reference"}
    exec(compile(source, "reference", "exec"), ns)
    return ns
'''

# name: (closed only by the private root, code). @PKG@, @REPO@, @SOFTMAX@, @NEURONS@, @FOLDER@ are
# the real paths (a student finds them from sys.prefix, the editable finder or the course's URL).
ROUTES = {
    "import_statement": (False, '''
import attention_lessons.softmax as _s, attention_lessons.neurons as _n
R_S, R_N = vars(_s), vars(_n)
'''),
    "importlib_import_module": (False, '''
import importlib
R_S, R_N = (vars(importlib.import_module(f"attention_lessons.{m}")) for m in ("softmax", "neurons"))
'''),
    # The reported attack: no import statement, the module's own file executed.
    "find_spec_then_exec_the_file": (False, EXEC_SOURCE + '''
import importlib.util
R_S, R_N = (_run(open(importlib.util.find_spec(f"attention_lessons.{m}").origin).read())
            for m in ("softmax", "neurons"))
'''),
    "find_spec_of_the_package_folder": (False, EXEC_SOURCE + '''
import importlib.util, os
_folder = importlib.util.find_spec("attention_lessons").submodule_search_locations[0]
R_S, R_N = (_run(open(os.path.join(_folder, f)).read()) for f in ("softmax.py", "neurons.py"))
'''),
    "reload_under_the_reference_name": (False, '''
import importlib, sys
import attention_lessons.shapes as _a, attention_lessons.data as _b
for _m, _name in ((_a, "attention_lessons.softmax"), (_b, "attention_lessons.neurons")):
    _m.__name__ = _m.__spec__.name = _name
    sys.modules[_name] = _m
R_S, R_N = vars(importlib.reload(_a)), vars(importlib.reload(_b))
'''),
    "grading_spec_module": (False, '''
from attention_lessons.grading import ex02
R_S, R_N = {"softmax": ex02._softmax}, {"divisive_normalization": ex02._divnorm}
'''),
    "pkgutil_get_data": (False, EXEC_SOURCE + '''
import pkgutil
R_S, R_N = (_run(pkgutil.get_data("attention_lessons", f).decode()) for f in ("softmax.py", "neurons.py"))
'''),
    "importlib_resources": (False, EXEC_SOURCE + '''
import importlib.resources
R_S, R_N = (_run(importlib.resources.files("attention_lessons").joinpath(f).read_text())
            for f in ("softmax.py", "neurons.py"))
'''),
    "spec_from_file_location": (True, '''
import importlib.util
def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)
R_S, R_N = _load("ref_softmax", "@SOFTMAX@"), _load("ref_neurons", "@NEURONS@")
'''),
    "source_file_loader": (True, '''
import importlib.machinery, importlib.util
def _load(name, path):
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return vars(module)
R_S, R_N = _load("ref_softmax", "@SOFTMAX@"), _load("ref_neurons", "@NEURONS@")
'''),
    "package_folder_on_sys_path": (True, '''
import sys
sys.path.insert(0, "@PKG@")
import softmax as _s, neurons as _n
R_S, R_N = vars(_s), vars(_n)
'''),
    # Undo everything the grader could have installed: meta_path, sys.path, sys.modules, and
    # re-install the editable install's own finder (it maps the package to the repository).
    "meta_path_sys_path_and_sys_modules_surgery": (True, '''
import importlib, importlib.machinery, os, sys
sys.meta_path[:] = [importlib.machinery.BuiltinImporter, importlib.machinery.FrozenImporter,
                    importlib.machinery.PathFinder]
sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "attention_lessons"))]
for _name in [n for n in sys.modules if n.startswith("attention_lessons")]:
    del sys.modules[_name]
sys.path_importer_cache.clear()
for _folder in [p for p in sys.path if p.endswith("-packages") and os.path.isdir(p)]:
    for _f in os.listdir(_folder):
        if _f.startswith("__editable__") and _f.endswith("finder.py"):
            importlib.import_module(_f[:-3]).install()
sys.path.append("@REPO@")
import attention_lessons.softmax as _s, attention_lessons.neurons as _n
R_S, R_N = vars(_s), vars(_n)
'''),
    "builtins_import_replaced": (True, '''
import builtins, importlib._bootstrap, importlib.util
def _import(name, globals=None, locals=None, fromlist=(), level=0):
    if name.startswith("attention_lessons."):
        spec = importlib.util.spec_from_file_location(name, "@PKG@/" + name.rsplit(".", 1)[1] + ".py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib._bootstrap.__import__(name, globals, locals, fromlist, level)
builtins.__import__ = _import
from attention_lessons.softmax import softmax as _softmax
from attention_lessons.neurons import divisive_normalization as _divnorm
R_S, R_N = {"softmax": _softmax}, {"divisive_normalization": _divnorm}
'''),
    "open_and_exec": (True, EXEC_SOURCE + '''
R_S, R_N = _run(open("@SOFTMAX@").read()), _run(open("@NEURONS@").read())
'''),
    "pathlib_read_text": (True, EXEC_SOURCE + '''
from pathlib import Path
R_S, R_N = _run(Path("@SOFTMAX@").read_text()), _run(Path("@NEURONS@").read_text())
'''),
    "io_open_and_os_read": (True, EXEC_SOURCE + '''
import io, os
_fd = os.open("@NEURONS@", os.O_RDONLY)
R_S, R_N = _run(io.open("@SOFTMAX@", "rb").read().decode()), _run(os.read(_fd, 10**7).decode())
'''),
    "pycache_pyc": (True, '''
import glob, marshal
def _load(stem):
    ns = {"__name__": "al_reference"}
    path = sorted(glob.glob(f"@PKG@/__pycache__/{stem}.cpython-*.pyc"))[0]
    exec(marshal.loads(open(path, "rb").read()[16:]), ns)
    return ns
R_S, R_N = _load("softmax"), _load("neurons")
'''),
    "inspect_getsource": (True, EXEC_SOURCE + '''
import inspect, types
def _source(path):
    module = types.ModuleType("ref")
    module.__file__ = path
    return inspect.getsource(module)
R_S, R_N = _run(_source("@SOFTMAX@")), _run(_source("@NEURONS@"))
'''),
    "linecache": (True, EXEC_SOURCE + '''
import linecache
R_S, R_N = _run("".join(linecache.getlines("@SOFTMAX@"))), _run("".join(linecache.getlines("@NEURONS@")))
'''),
    "zipimport": (True, '''
import importlib.util, os, tempfile, zipfile, zipimport
_zip = os.path.join(tempfile.mkdtemp(), "ref.zip")
with zipfile.ZipFile(_zip, "w") as _f:
    _f.write("@SOFTMAX@", "ref_softmax.py")
    _f.write("@NEURONS@", "ref_neurons.py")
def _load(name):
    spec = zipimport.zipimporter(_zip).find_spec(name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return vars(module)
R_S, R_N = _load("ref_softmax"), _load("ref_neurons")
'''),
    # A fresh interpreter has none of the kernel's state; -I ignores PYTHONPATH.
    "subprocess_python": (True, EXEC_SOURCE + '''
import subprocess, sys
def _source(module):
    code = f"import inspect, {module} as m; print(inspect.getsource(m))"
    return subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True).stdout
R_S, R_N = _run(_source("attention_lessons.softmax")), _run(_source("attention_lessons.neurons"))
'''),
    "os_system": (True, EXEC_SOURCE + '''
import os, tempfile
_out = tempfile.mkdtemp()
os.system(f"cat @SOFTMAX@ > {_out}/s.py; cat @NEURONS@ > {_out}/n.py")
R_S, R_N = _run(open(f"{_out}/s.py").read()), _run(open(f"{_out}/n.py").read())
'''),
    "ctypes_libc_read": (True, EXEC_SOURCE + '''
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
def _read(path):
    fd = _libc.open(path.encode(), os.O_RDONLY)
    buf = ctypes.create_string_buffer(10**6)
    n = _libc.read(fd, buf, 10**6)
    return buf.raw[:n].decode()
R_S, R_N = _run(_read("@SOFTMAX@")), _run(_read("@NEURONS@"))
'''),
    # A single-threaded child takes new user and mount namespaces (all capabilities there),
    # unmounts whatever covers the package, the repository and /, then tries the real path
    # and every process's root.
    "ctypes_namespace_escape": (True, EXEC_SOURCE + '''
import ctypes, os, tempfile
_out = tempfile.mkdtemp()
_pid = os.fork()
if _pid == 0:
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.unshare(0x10000000 | 0x00020000)
        for _path in ("@PKG@", "@REPO@", "/"):
            _libc.umount2(_path.encode(), 2)
        _roots = [""] + [f"/proc/{p}/root" for p in os.listdir("/proc") if p.isdigit()]
        for _name in ("@SOFTMAX@", "@NEURONS@"):
            for _root in _roots:
                try:
                    _text = open(_root + _name).read()
                except OSError:
                    continue
                if "raise ImportError" not in _text:
                    open(os.path.join(_out, os.path.basename(_name)), "w").write(_text)
                    break
    finally:
        os._exit(0)
os.waitpid(_pid, 0)
R_S, R_N = _run(open(f"{_out}/softmax.py").read()), _run(open(f"{_out}/neurons.py").read())
'''),
    "proc_root_of_other_processes": (True, EXEC_SOURCE + '''
import os
def _find(path):
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != str(os.getpid()):
            try:
                text = open(f"/proc/{pid}/root{path}").read()
            except OSError:
                continue
            if "raise ImportError" not in text:
                return text
    raise FileNotFoundError(path)
R_S, R_N = _run(_find("@SOFTMAX@")), _run(_find("@NEURONS@"))
'''),
    "git_history": (True, EXEC_SOURCE + '''
import subprocess
def _show(path):
    return subprocess.run(["git", "-C", "@REPO@", "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout
R_S, R_N = _run(_show("attention_lessons/softmax.py")), _run(_show("attention_lessons/neurons.py"))
'''),
    "solution_notebook": (True, '''
import json
for _cell in json.load(open("@REPO@/solutions/ex02_softmax.ipynb"))["cells"]:
    if "answer" in _cell["metadata"].get("tags", []):
        exec("".join(_cell["source"]), globals())
'''),
    "a_classmates_submission": (True, '''
import json
for _cell in json.load(open("@FOLDER@/solution_ex02.ipynb"))["cells"]:
    if "answer" in _cell["metadata"].get("tags", []):
        exec("".join(_cell["source"]), globals())
'''),
}


def _route_code(name, folder):
    code = ROUTES[name][1]
    for key, value in (("@SOFTMAX@", PKG / "softmax.py"), ("@NEURONS@", PKG / "neurons.py"), ("@PKG@", PKG),
                       ("@REPO@", REPO), ("@FOLDER@", folder)):
        code = code.replace(key, str(value))
    return code + (WRAP if "R_S" in code else "")


def _route_params():
    params = []
    for name, (private_root, _) in ROUTES.items():
        marks = [NEEDS_PRIVATE_ROOT] if private_root else []
        if name == "git_history" and (shutil.which("git") is None or not (REPO / ".git").exists()):
            marks = [pytest.mark.skip(reason="the package is not in a git checkout")]
        if name == "solution_notebook" and not (REPO / "solutions").is_dir():
            marks = [pytest.mark.skip(reason="no solutions/ next to the package")]
        params.append(pytest.param(name, marks=marks))
    return params


ALLOWED = '''
# Modules an exercise may use are all there.
import attention_lessons, attention_lessons.plotting, attention_lessons.data, attention_lessons.shapes
import attention_lessons.device
from attention_lessons.grading import check, summary
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox")
    # The compiled reference, as a normal import leaves it (this environment may not write .pyc).
    for module in ("softmax", "neurons"):
        source = str(PKG / f"{module}.py")
        py_compile.compile(source, cfile=importlib.util.cache_from_source(source), doraise=True)
    untouched = nbformat.read(ROOT / "exercises" / "ex02_softmax.ipynb", as_version=4)
    for name in ROUTES:
        nb = copy.deepcopy(untouched)
        nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(_route_code(name, folder)))
        nbformat.write(nb, folder / f"route_{name}.ipynb")
    shutil.copy(ROOT / "solutions" / "ex02_softmax.ipynb", folder / "solution_ex02.ipynb")
    shutil.copy(ROOT / "solutions" / "ex06_keras_layer.ipynb", folder / "solution_ex06.ipynb")
    solution = nbformat.read(ROOT / "solutions" / "ex02_softmax.ipynb", as_version=4)
    solution.cells.insert(len(solution.cells) - 1, nbformat.v4.new_code_cell(ALLOWED))
    nbformat.write(solution, folder / "allowed_modules_ex02.ipynb")
    return folder


@pytest.fixture(scope="module")
def graded(folder):
    ex02 = [folder / f"route_{name}.ipynb" for name in ROUTES] + [folder / "solution_ex02.ipynb",
                                                                  folder / "allowed_modules_ex02.ipynb"]
    rows = grade_many(ex02, GradeOptions(cell_timeout=30, call_timeout=5), jobs=2)
    rows += grade_many([folder / "solution_ex06.ipynb"], GradeOptions(cell_timeout=120, call_timeout=60))
    return {Path(r["file"]).stem: r for r in rows}


@pytest.mark.parametrize("route", _route_params())
def test_route_to_the_reference_scores_zero(graded, route):
    row = graded[f"route_{route}"]
    assert row["status"] not in ("crashed", "timeout", "grader-error"), row["message"]  # the kernel ran it
    assert row["questions"] == {q.id: 0.0 for q in get_exercise("ex02").questions}, (row["message"], row["sandbox"])


@pytest.mark.parametrize("route", _route_params())
def test_route_works_without_the_sandbox(folder, route):
    """The same cell, in a plain interpreter with the real package, does reach the reference."""
    check = '''
import numpy as np
x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1e4]])
assert np.allclose(softmax(x).sum(-1), 1) and np.allclose(softmax(x)[0], np.exp(x[0]) / np.exp(x[0]).sum())
assert np.allclose(masked_softmax(x, np.array([True, False, True]))[:, 1], 0)
assert np.allclose(divisive_normalization(np.array([1.0, 2.0]), 1.0, 2), [1 / 6, 4 / 6])
print("REACHED")
'''
    code = "import numpy as np\n" + _route_code(route, folder) + check
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600)  # hangs only
    assert "REACHED" in out.stdout, out.stderr[-2000:]


IMPORT_ROUTES = [name for name, (private_root, _) in ROUTES.items() if not private_root]


@pytest.fixture(scope="module")
def graded_without_namespaces(folder):
    """What macOS, Windows and locked-down containers get (forced here with isolate=False)."""
    paths = [folder / f"route_{name}.ipynb" for name in IMPORT_ROUTES] + [folder / "solution_ex02.ipynb"]
    rows = grade_many(paths, GradeOptions(cell_timeout=30, call_timeout=5, isolate=False), jobs=2)
    return {Path(r["file"]).stem: r for r in rows}


@pytest.mark.parametrize("route", IMPORT_ROUTES)
def test_without_namespaces_every_import_route_still_finds_the_stubs(graded_without_namespaces, route):
    rows = graded_without_namespaces
    row = rows[f"route_{route}"]
    assert "reference hidden from imports only" in row["sandbox"]
    assert row["status"] not in ("crashed", "timeout", "grader-error"), row["message"]
    assert row["score"] == 0, row["message"]
    assert rows["solution_ex02"]["score"] == rows["solution_ex02"]["max_score"]


def test_honest_solution_scores_full_marks_in_the_sandbox(graded):
    row = graded["solution_ex02"]
    assert row["status"] == "ok", row["message"]
    assert row["score"] == row["max_score"] == get_exercise("ex02").points
    if ISOLATED:
        assert sandbox.PRIVATE_ROOT in row["sandbox"]


def test_modules_an_exercise_may_use_are_available(graded):
    row = graded["allowed_modules_ex02"]
    assert row["status"] == "ok", row["message"]
    assert row["score"] == row["max_score"]


def test_keras_exercise_still_grades_full_marks(graded):
    row = graded["solution_ex06"]
    assert row["status"] == "ok", row["message"]
    assert row["score"] == row["max_score"] == get_exercise("ex06").points


def test_the_reference_import_says_why_it_fails(graded):
    row = graded["route_import_statement"]
    assert "attention_lessons.softmax is not available while grading" in row["message"]


# ---------------------------------------------------------------- without a kernel

def test_stripped_copy_replaces_the_references_and_keeps_the_rest(tmp_path):
    copy_ = sandbox.strip_package(tmp_path, sandbox.hidden_modules(get_exercise("ex02")))
    for stub in ("softmax.py", "neurons.py", "attention.py", "layers.py", "grading/ex02.py", "grading/ex06.py"):
        assert "raise ImportError" in (copy_ / stub).read_text() and "def " not in (copy_ / stub).read_text()
    for kept in ("plotting.py", "data.py", "grading/__init__.py", "grading/harvest.py", "grading/spec.py"):
        assert (copy_ / kept).read_text() == (PKG / kept).read_text()
    assert not list(copy_.rglob("__pycache__"))


def test_an_exercise_keeps_the_modules_it_allows(tmp_path):
    copy_ = sandbox.strip_package(tmp_path, sandbox.hidden_modules(get_exercise("ex07")))
    for kept in ("layers.py", "attention.py", "softmax.py"):
        assert (copy_ / kept).read_text() == (PKG / kept).read_text()
    assert "raise ImportError" in (copy_ / "neurons.py").read_text()


def test_plan_binds_no_folder_that_holds_the_repository_or_the_submissions(tmp_path):
    (tmp_path / "work").mkdir()
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    jail = sandbox.prepare(tmp_path, tmp_path / "work", get_exercise("ex02"), hide=[submissions])
    plan = jail.plan([sys.executable, "-m", "ipykernel_launcher"])
    for mount in plan["mounts"]:
        if mount["kind"] != "bind":
            continue
        source, target = Path(mount["source"]), Path(mount["path"])
        assert submissions not in (source, *source.parents), mount
        if EDITABLE:   # a source checkout: the repository stays out, but for the venv and the package
            assert source not in REPO.parents and source != REPO, mount
            if REPO in source.parents:  # only the virtual environment, and the package (as the stripped copy)
                assert target == PKG or Path(sys.prefix).resolve() in (source, *source.parents), mount
        elif PKG in (target, *target.parents) or target in PKG.parents:
            # pip-installed: the environment holding site-packages is bound, and the package folder
            # in it is covered by the stripped copy, mounted later (deeper paths come later).
            assert target == PKG or target in PKG.parents or source == jail.package, mount
    assert {"kind": "bind", "path": str(PKG), "source": str(jail.package)} in plan["mounts"]
    cover = plan["mounts"].index({"kind": "bind", "path": str(PKG), "source": str(jail.package)})
    assert all(plan["mounts"].index(m) < cover for m in plan["mounts"]
               if m["kind"] == "bind" and Path(m["path"]) in PKG.parents), "the copy must be mounted last"


@NEEDS_PRIVATE_ROOT
def test_kernel_process_sees_only_the_plan_and_has_no_capabilities(tmp_path):
    (tmp_path / "work").mkdir()
    jail = sandbox.prepare(tmp_path, tmp_path / "work", get_exercise("ex02"))
    code = '''
import json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"cap": status["CapEff"].strip(), "pid": os.getpid(),
                  "pids": [p for p in os.listdir("/proc") if p.isdigit()],
                  "repo": sorted(os.listdir(%r)), "package": open(%r).read()}))
''' % (str(REPO), str(PKG / "softmax.py"))
    out = subprocess.run(jail.command([sys.executable, "-c", code]), env=jail.env(), cwd=tmp_path / "work",
                         capture_output=True, text=True, timeout=600)  # hangs only
    seen = json.loads(out.stdout)
    assert int(seen["cap"], 16) == 0                      # cannot mount, unmount or trace anything
    assert seen["pid"] == 1 and seen["pids"] == ["1"]     # no other process (nor its /proc/PID/root)
    if EDITABLE:   # the repository shows only the package (the stripped copy) and the venv
        venv = [Path(sys.prefix).resolve().relative_to(REPO).parts[0]] if REPO in Path(sys.prefix).resolve().parents else []
        assert seen["repo"] == sorted([PKG.name] + venv)      # no solutions/, tests/, .git
    assert "raise ImportError" in seen["package"]             # the copy, never the reference
