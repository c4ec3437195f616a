"""Keep the reference implementations out of reach of the code being graded.

The guarantee does not come from blocking routes (an import hook, a list of forbidden
functions: the submission runs in the same interpreter and can undo any of them). It
comes from what exists in the kernel's world:

* **A stripped copy of the package.** For each submission the grader copies
  ``attention_lessons`` into the submission's grading folder with the reference modules
  (:data:`REFERENCE_MODULES`, less the exercise's ``allowed_modules``) and the exercise
  specifications (``grading/exNN.py``, which hold the references and near-correct buggy
  variants) replaced by stubs that raise ``ImportError`` with a clear message. The rest of
  the package (``grading.check``'s machinery, ``plotting``, ``data``, ``device``…) is there.
* **A private root file system** (Linux with user namespaces; :mod:`.sandbox_launcher`).
  The kernel starts in new user, mount, PID, network and IPC namespaces whose root holds
  only the system folders and the Python installation (read-only), the stripped copy
  mounted *over* the real package folder (so an editable install, a site-packages install,
  ``find_spec``, ``__file__`` and hard-coded paths all lead to the stubs), a fresh ``/tmp``,
  ``$HOME``, ``/dev`` and ``/proc``, and the grading folder. The course repository (its
  ``solutions/``, tests and ``.git``), the submissions folder, the pip cache and the other
  processes of the machine do not exist there; the kernel has no capability to mount or
  unmount anything, and a nested namespace only sees the same tree.

Where the OS does not allow the namespaces (macOS, Windows, most containers), only the first
part holds: the stripped copy is first on ``PYTHONPATH``, so every import route finds the
stubs, but the real files can still be read by path. The ``sandbox`` column says which.
The grader itself keeps the real package: it computes the references in its own process.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

#: The course modules that implement what the exercises ask for.
REFERENCE_MODULES = ("attention_lessons.softmax", "attention_lessons.neurons", "attention_lessons.attention",
                     "attention_lessons.layers", "attention_lessons.modern")
#: A reference module that another one imports: allowing the importer allows it too (``layers``
#: imports ``modern`` to re-export its classes, so ex07, which may use ``layers``, keeps ``modern``).
_IMPORTED_WITH = {"attention_lessons.layers": ("attention_lessons.modern",)}
LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
#: Folders of the system that the kernel sees read-only (when they exist).
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

STUB = '''"""Left out of the course package while a notebook is graded (docs/instructors.md, "sandbox")."""

raise ImportError(
    "{name} is not available while grading: your notebook runs with a copy of the course package "
    "that leaves out the reference implementations. Write the code yourself.", name="{name}")
'''


def package_dir() -> Path:
    import attention_lessons

    return Path(attention_lessons.__file__).resolve().parent


def hidden_modules(exercise) -> tuple[str, ...]:
    """The package modules replaced by stubs while ``exercise`` is graded."""
    from . import _MODULES

    specs = tuple(f"attention_lessons.grading.{m}" for m in dict.fromkeys(_MODULES.values()))
    allowed = set(getattr(exercise, "allowed_modules", ()) or ())
    allowed |= {m for name in list(allowed) for m in _IMPORTED_WITH.get(name, ())}
    return tuple(m for m in REFERENCE_MODULES + specs if m not in allowed)


def strip_package(dest: Path, hidden) -> Path:
    """Copy the package into ``dest/attention_lessons`` with each of ``hidden`` replaced by a stub."""
    target = Path(dest) / "attention_lessons"
    shutil.copytree(package_dir(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    for name in hidden:
        rel = Path(*name.split(".")[1:])
        if (target / rel).is_dir():
            shutil.rmtree(target / rel)
            stub = target / rel / "__init__.py"
            stub.parent.mkdir()
        else:
            stub = target / rel.with_suffix(".py")
        stub.write_text(STUB.format(name=name))
    return target


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _real(path) -> Path | None:
    try:
        path = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None
    return path if path.exists() else None


def _site_folders() -> list[Path]:
    """Every folder where Python could find an installed ``attention_lessons``."""
    import glob
    import site

    found = [p for p in sys.path if p]
    try:
        found += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:  # some embedded Pythons
        pass
    for prefix in {sys.prefix, sys.base_prefix, "/usr", "/usr/local"}:
        found += glob.glob(os.path.join(prefix, "lib", "python3*", "*-packages"))
    return [p for p in map(_real, found) if p is not None and p.is_dir()]


@dataclass
class Sandbox:
    """What one grading kernel may see; :meth:`command` and :meth:`env` start it that way."""

    folder: Path                 # the submission's grading folder (the only real folder it can write)
    cwd: Path                    # the kernel's working directory, inside ``folder``
    package: Path                # the stripped copy of attention_lessons
    hide: tuple = ()             # further folders to keep out (the submissions' folder)
    isolate: bool = True         # use the namespaces where the OS allows them

    def env(self, base=None) -> dict:
        env = dict(os.environ if base is None else base)
        env["PYTHONPATH"] = os.pathsep.join([str(self.package.parent)] + [p for p in [env.get("PYTHONPATH")] if p])
        if not self.isolate:
            env["AL_SANDBOX"] = "reference hidden from imports only (namespaces turned off)"
        elif not sys.platform.startswith("linux"):
            env["AL_SANDBOX"] = f"reference hidden from imports only (no namespaces on {sys.platform})"
        env.pop("AL_SANDBOX_NETNS", None)
        return env

    def command(self, kernel_cmd: list[str]) -> list[str]:
        """``kernel_cmd`` wrapped in the launcher (on Linux), after writing its plan."""
        if not self.isolate or not sys.platform.startswith("linux"):
            return list(kernel_cmd)
        plan_path = self.folder / "sandbox-plan.json"
        plan_path.write_text(json.dumps(self.plan(kernel_cmd), indent=1))
        return [sys.executable, "-I", "-S", str(LAUNCHER), str(plan_path), "--", *kernel_cmd]

    def plan(self, kernel_cmd: list[str]) -> dict:
        """The launcher's list of mounts: what exists in the kernel's root file system."""
        packages = {package_dir()} | {p / "attention_lessons" for p in _site_folders()
                                      if (p / "attention_lessons" / "__init__.py").is_file()}
        packages = {p.resolve() for p in packages}
        # A source checkout (editable install): the whole repository stays out, not just the package.
        repos = {p.parent for p in packages
                 if any((p.parent / m).exists() for m in ("pyproject.toml", "setup.py", "setup.cfg", ".git"))}
        hidden = packages | repos | {p for p in map(_real, self.hide) if p is not None}
        exe = kernel_cmd[0] if kernel_cmd else sys.executable
        prefixes = {p for p in map(_real, [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                                           Path(sys.executable).parent.parent, Path(exe).parent.parent,
                                           Path(os.path.realpath(sys.executable)).parent.parent,
                                           Path(os.path.realpath(exe)).parent.parent]) if p is not None}
        candidates = list(prefixes) + _site_folders()
        candidates += [p for p in map(_real, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if
                                      os.environ.get("LD_LIBRARY_PATH") else []) if p is not None]

        def allowed(p: Path) -> bool:
            # A folder that would contain a hidden one stays out; the package itself is no reason
            # (pip installs it inside site-packages): the stripped copy is mounted over it below.
            if p == Path(p.anchor) or any(_inside(h, p) for h in hidden - packages):
                return False
            if any(_inside(p, r) for r in repos) and not any(_inside(p, x) for x in prefixes):
                return False  # e.g. the repository's tests/ or scripts/ on sys.path
            return not _inside(self.folder, p)

        mounts = []
        for name in SYSTEM_FOLDERS:
            if os.path.islink(name):
                mounts.append({"kind": "symlink", "path": name, "target": os.readlink(name)})
            elif os.path.isdir(name):
                mounts.append({"kind": "bind", "path": name, "source": name})
        binds = [Path(m["path"]) for m in mounts if m["kind"] == "bind"]
        for p in sorted({p for p in candidates if allowed(p)}, key=lambda p: len(p.parts)):
            # Already visible through a folder bound above it (unless a hidden folder lies between).
            if not any(_inside(p, q) and not any(_inside(p, h) and _inside(h, q) for h in hidden) for q in binds):
                binds.append(p)
                mounts.append({"kind": "bind", "path": str(p), "source": str(p)})
        home = _real(os.path.expanduser("~"))
        if home is not None and home != Path(home.anchor) and home not in prefixes:
            mounts.append({"kind": "tmpfs", "path": str(home), "mode": "0700", "size": "512m"})
        mounts += [{"kind": "tmpfs", "path": "/tmp", "mode": "1777", "size": "1g"},
                   {"kind": "tmpfs", "path": "/dev", "size": "1m"},
                   {"kind": "tmpfs", "path": "/dev/shm", "mode": "1777", "size": "256m"},
                   {"kind": "proc", "path": "/proc"}]
        devices = [f"/dev/{d}" for d in DEVICES if os.path.exists(f"/dev/{d}")]
        devices += sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())  # GPUs, if any
        mounts += [{"kind": "bind", "path": d, "source": d, "readonly": False} for d in devices]
        mounts += [{"kind": "symlink", "path": f"/dev/{name}", "target": target}
                   for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                        ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))]
        # Hidden folders that a bound folder contains (a repository in a virtual environment,
        # submissions under /usr...) are covered by an empty tmpfs.
        mounts += [{"kind": "tmpfs", "path": str(h), "size": "1m"} for h in sorted(hidden - packages)
                   if any(_inside(h, b) for b in binds)]
        mounts += [{"kind": "bind", "path": str(p), "source": str(self.package)} for p in sorted(packages)]
        mounts += [{"kind": "bind", "path": str(self.folder.resolve()), "source": str(self.folder.resolve()),
                    "readonly": False, "recursive": False}]
        mounts.sort(key=lambda m: len(Path(m["path"]).parts))  # stable: parents first
        return {"root": str(self.folder.resolve() / "root"), "cwd": str(self.cwd.resolve()), "mounts": mounts}


def prepare(folder: Path, cwd: Path, exercise, hide=(), isolate: bool = True) -> Sandbox:
    """The stripped package for ``exercise`` in ``folder``, and the kernel's view of the machine."""
    folder = Path(folder)
    package = strip_package(folder / "pkg", hidden_modules(exercise))
    (folder / "root").mkdir()
    return Sandbox(folder=folder, cwd=Path(cwd), package=package, hide=tuple(hide), isolate=isolate)


PRIVATE_ROOT = "reference hidden (private root file system)"


@functools.lru_cache(maxsize=None)
def probe() -> str:
    """What the sandbox achieves on this machine: the text a grading kernel reports.

    It starts with :data:`PRIVATE_ROOT` where the kernel gets its own root file system, and
    with "reference hidden from imports only (reason)" where the OS does not allow it.
    """
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="al-probe-") as tmp:
        tmp = Path(tmp)
        (tmp / "work").mkdir()
        (tmp / "root").mkdir()
        jail = Sandbox(folder=tmp, cwd=tmp / "work", package=package_dir())
        cmd = jail.command([sys.executable, "-I", "-S", "-c", "import os; print(os.environ.get('AL_SANDBOX', ''))"])
        try:
            out = subprocess.run(cmd, env=jail.env(), cwd=tmp / "work", capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"reference hidden from imports only (the launcher failed: {exc})"
        text = out.stdout.strip()
        return text or f"reference hidden from imports only (the launcher failed: {out.stderr.strip()[-300:]})"


@functools.lru_cache(maxsize=None)
def kernel_manager_class():
    """An ``AsyncKernelManager`` that starts its kernel through :attr:`sandbox` (when set)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Any

    class SandboxKernelManager(AsyncKernelManager):
        sandbox = Any(None, allow_none=True)

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return cmd if self.sandbox is None else self.sandbox.command(cmd)

    return SandboxKernelManager
