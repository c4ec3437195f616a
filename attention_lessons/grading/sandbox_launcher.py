"""Start a grading kernel in a file system where the reference implementations do not exist.

The grader runs this file (standard library only: it runs before the kernel, outside the
package) as::

    python -I -S sandbox_launcher.py PLAN.json -- KERNEL_COMMAND...

On Linux, where the kernel allows unprivileged user namespaces, it

1. enters new user, mount, PID, network and IPC namespaces. Inside, the process has the
   user id of the grader, or ``nobody`` when the grader runs as root, so the kernel it
   starts keeps no capability: it cannot mount, unmount or change the namespaces;
2. forks: the child becomes process 1 of the new PID namespace and builds a new root file
   system on an empty ``tmpfs`` from the plan's list (written by
   :mod:`attention_lessons.grading.sandbox`): read-only bind mounts of the system folders
   and of the Python installation, the stripped copy of the course package mounted *over*
   the real package folder, a fresh ``/tmp``, ``$HOME``, ``/dev`` and ``/proc``, and the
   submission's grading folder read-write. Nothing else exists in it: not the course
   repository, not the submissions, not the other processes of the machine;
3. switches to that root (``pivot_root``), detaches the old one, forbids gaining
   privileges (``PR_SET_NO_NEW_PRIVS``) and executes the kernel;
4. the parent stays outside, waits for the kernel and exits with its status. If it is
   killed, the kernel is killed with it (``PR_SET_PDEATHSIG``); when the kernel ends, every
   process it started ends too (the PID namespace dies with its process 1).

Where any step before the switch fails (not Linux, user namespaces disabled, a container
that forbids ``mount``), the kernel starts as it would have, only with the stripped package
first on its path, and ``AL_SANDBOX`` says why: the grader's ``sandbox`` column shows it.
"""

import ctypes
import json
import os
import platform
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
NOBODY = 65534
#: pivot_root(2) has no libc wrapper: its system call number per architecture.
SYS_PIVOT_ROOT = {"x86_64": 155, "amd64": 155, "aarch64": 41, "arm64": 41, "riscv64": 41, "loongarch64": 41,
                  "ppc64le": 203, "ppc64": 203, "s390x": 217, "i386": 217, "i686": 217, "armv7l": 218}
#: statvfs flags that a remount inside a user namespace must keep (they are locked).
_KEEP = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
         (getattr(os, "ST_NOATIME", 1024), MS_NOATIME), (getattr(os, "ST_NODIRATIME", 2048), MS_NODIRATIME),
         (getattr(os, "ST_RELATIME", 4096), MS_RELATIME))


class _Libc:
    def __init__(self):
        self.lib = ctypes.CDLL(None, use_errno=True)

    def __call__(self, name, *args):
        result = getattr(self.lib, name)(*args)
        if result == -1:
            err = ctypes.get_errno()
            shown = tuple(a.decode() if isinstance(a, bytes) else getattr(a, "value", a) for a in args)
            raise OSError(err, f"{name}{shown}: {os.strerror(err)}")
        return result

    def mount(self, source, target, fstype, flags, data=None):
        enc = (lambda s: None if s is None else s.encode())
        self("mount", enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(libc):
    """New user, mount, PID, network and IPC namespaces; the user maps to itself (root to nobody)."""
    uid, gid = os.geteuid(), os.getegid()
    libc("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC)
    _write("/proc/self/setgroups", "deny")
    # A user id other than 0 inside the namespace: the kernel started later has no capability.
    _write("/proc/self/uid_map", f"{uid or NOBODY} {uid} 1")
    _write("/proc/self/gid_map", f"{gid or NOBODY} {gid} 1")


def _mountpoint(path, like_file):
    if like_file:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            open(path, "w").close()
    else:
        os.makedirs(path, exist_ok=True)


def build_root(libc, plan):
    """Populate the plan's new root and switch to it; returns notes on what could not be done."""
    notes = []
    root = plan["root"]
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    libc.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    for op in plan["mounts"]:  # parents before children: a deeper mount lands on top
        kind, target = op["kind"], root + op["path"]
        if kind == "bind":
            source = op["source"]
            if not os.path.exists(source):
                continue
            _mountpoint(target, not os.path.isdir(source))
            libc.mount(source, target, None, MS_BIND | (MS_REC if op.get("recursive", True) else 0))
            if op.get("readonly", True):
                flags = os.statvfs(target).f_flag
                keep = sum(ms for st, ms in _KEEP if flags & st)
                try:
                    libc.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)
                except OSError as exc:
                    notes.append(f"{op['path']} writable ({exc.strerror})")
        elif kind == "tmpfs":
            _mountpoint(target, False)
            libc.mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV,
                       f"mode={op.get('mode', '0755')},size={op.get('size', '64m')}")
        elif kind == "proc":
            _mountpoint(target, False)
            libc.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif kind == "symlink":
            _mountpoint(os.path.dirname(target), False)
            os.symlink(op["target"], target)
        elif kind == "copy":
            if os.path.isfile(op["source"]):
                _mountpoint(os.path.dirname(target), False)
                with open(op["source"], "rb") as src, open(target, "wb") as dst:
                    dst.write(src.read())
        else:
            raise ValueError(f"unknown mount kind {kind!r}")
    number = SYS_PIVOT_ROOT.get(platform.machine().lower())
    if number is None:
        raise OSError(f"pivot_root: unknown architecture {platform.machine()}")
    os.mkdir(os.path.join(root, ".old-root"))
    os.chdir(root)
    libc("syscall", ctypes.c_long(number), b".", b".old-root")
    try:
        os.chroot(".")
        libc("umount2", b"/.old-root", MNT_DETACH)
        os.rmdir("/.old-root")
        os.chdir(plan["cwd"])
    except Exception as exc:  # noqa: BLE001 - the old root may still be reachable: never start the kernel
        sys.stderr.write(f"grading sandbox: cannot detach the old root file system: {exc}\n")
        os._exit(70)
    return notes


def _supervise(child):
    """The parent: wait for the kernel and exit with its status."""
    # An interrupt reaches the kernel directly (Jupyter signals the whole process group).
    signal.signal(signal.SIGINT, lambda *_: None)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def main(argv):
    split = argv.index("--")
    plan_path, cmd = argv[split - 1], argv[split + 1:]
    with open(plan_path) as f:
        plan = json.load(f)
    env = dict(os.environ)
    try:
        if not sys.platform.startswith("linux"):
            raise OSError("not Linux")
        libc = _Libc()
        # If the grader dies, this process dies, and the kernel with it (below): no orphan kernels.
        parent = os.getppid()
        libc("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
        enter_namespaces(libc)
    except Exception as exc:  # noqa: BLE001 - any failure: start the kernel unisolated, say why
        env["AL_SANDBOX"] = f"reference hidden from imports only (no namespaces: {exc})"
        os.execve(cmd[0], cmd, env)
    child = os.fork()
    if child:
        _supervise(child)
    try:
        libc("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        notes = build_root(libc, plan)
        env["AL_SANDBOX"] = "reference hidden (private root file system)" + "".join(f"; {n}" for n in notes)
        env["AL_SANDBOX_NETNS"] = "1"
    except Exception as exc:  # noqa: BLE001 - failed before the switch: the old root is still in place
        env["AL_SANDBOX"] = f"reference hidden from imports only (no private root: {exc})"
        env["AL_SANDBOX_NETNS"] = "1"
        os.chdir(plan["cwd"])
    libc("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main(sys.argv[1:])
