"""Batch grading: run each submission in its own kernel, judge it in this process.

For every notebook the grader

1. reads it (a file that is not a notebook gets status ``unreadable``);
2. executes its code cells, except the check cells, in a fresh kernel with a per-cell
   timeout, after a preamble that limits memory and cuts the network where the OS allows it;
   the kernel sees a copy of the package without the reference implementations and, on
   Linux, a private root file system without the repository (:mod:`.sandbox`);
3. calls the student's functions inside that kernel on inputs the grader generated with
   its own seed, and ships the raw return values back as arrays (no pickles);
4. compares them with the reference **here**, so nothing the submission patches
   (``numpy.allclose``, ``numpy.testing``, the check function) can change its score.

A submission that raises, loops or kills its kernel still gets a row.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np

from . import drivers, harvest, sandbox
from .spec import encode_calls, build_cases, judge, outcomes_from_records, split_outcomes

PREAMBLE = r'''
# --- grader preamble (not part of the submission) ---
import json as _al_json, os as _al_os
_al_sandbox = []
try:
    import resource as _al_resource
    _al_resource.setrlimit(_al_resource.RLIMIT_AS, ({memory}, {memory}))
    _al_sandbox.append("memory<={memory_mb}MB")
except Exception as _al_e:
    _al_sandbox.append("no memory limit (" + type(_al_e).__name__ + ")")
try:
    if _al_os.environ.get("AL_SANDBOX_NETNS") == "1":
        pass  # the launcher started the whole kernel in a new, empty network namespace
    # Else a new, empty network namespace for this thread: no interface, not even loopback.
    # The kernel's own sockets were opened before and keep working.
    elif __import__("ctypes").CDLL(None, use_errno=True).unshare(0x40000000) != 0:
        raise OSError("unshare not permitted")
    _al_sandbox.append("network namespace")
except Exception:
    import socket as _al_socket
    def _al_no_network(*args, **kwargs):
        raise OSError("network access is disabled while grading")
    _al_socket.socket.connect = _al_socket.socket.connect_ex = _al_no_network
    _al_socket.create_connection = _al_socket.getaddrinfo = _al_no_network
    _al_sandbox.append("socket guard")
_al_sandbox.append(_al_os.environ.get("AL_SANDBOX", "reference hidden from imports only"))
print("sandbox:", _al_json.dumps(_al_sandbox))
'''

HARVEST = r'''
# --- grader harvest (not part of the submission) ---
_al_h = {{"__name__": "_al_harvest"}}
exec(compile({source!r}, "harvest", "exec"), _al_h)
exec(compile({drivers!r}, "drivers", "exec"), _al_h)
_al_h["harvest_to_files"](globals(), {payload_json!r}, {payload_npz!r}, {out_json!r}, {out_npz!r}, {call_timeout!r},
                          _al_h["DRIVERS"])
'''


@dataclass
class GradeOptions:
    cell_timeout: float = 60.0
    call_timeout: float = 10.0
    notebook_timeout: float = 600.0
    memory_mb: int = 4096
    seed: int = 20261122
    exercise: str | None = None
    kernel_name: str = "python3"
    #: Linux: run the kernel in its own namespaces, with a root file system without the
    #: repository (see ``sandbox``). Turn off only to troubleshoot a kernel that will not start.
    isolate: bool = True


def _is_check_cell(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return "check" in tags or "attention_lessons.grading" in cell.source


def detect_exercise(nb, path: Path) -> str | None:
    """The exercise id from the notebook's metadata, else from its file name (``exNN``)."""
    meta = nb.get("metadata", {}).get("attention_lessons", {})
    if isinstance(meta, dict) and isinstance(meta.get("exercise"), str):
        return meta["exercise"]
    match = re.search(r"(ex\d\d)", path.name)
    return match.group(1) if match else None


def _row(path: Path, exercise, status: str, message: str = "", started: float | None = None) -> dict:
    return {"student": path.stem, "file": str(path), "exercise": exercise or "", "status": status,
            "score": 0.0, "max_score": 0.0, "questions": {}, "feedback": [], "sandbox": "",
            "seconds": round(time.perf_counter() - started, 2) if started else 0.0, "message": message}


def grade_notebook(path, options: GradeOptions | None = None) -> dict:
    """Grade one submission; always returns a row (see module docstring)."""
    from . import get_exercise

    options = options or GradeOptions()
    path = Path(path)
    started = time.perf_counter()
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a status, not a crash
        return _row(path, options.exercise, "unreadable", f"not a readable notebook: {type(exc).__name__}: {exc}"[:300], started)
    exercise_id = options.exercise or detect_exercise(nb, path)
    try:
        exercise = get_exercise(exercise_id)
    except KeyError:
        return _row(path, exercise_id, "unknown-exercise",
                    f"cannot tell which exercise this is ({exercise_id!r}); pass --exercise", started)
    row = _row(path, exercise.id, "ok", "", None)
    row["max_score"] = exercise.points
    plan = [(q, build_cases(q, options.seed)) for q in exercise.questions]
    payload, arrays = encode_calls(plan)
    memory_mb = max(options.memory_mb, exercise.memory_mb)
    if exercise.cell_timeout > options.cell_timeout:
        options = dataclasses.replace(options, cell_timeout=exercise.cell_timeout)

    with tempfile.TemporaryDirectory(prefix="al-grade-") as tmp:
        tmp = Path(tmp)
        files = {k: str(tmp / f"{k}") for k in ("payload.json", "payload.npz", "out.json", "out.npz")}
        Path(files["payload.json"]).write_text(json.dumps(payload))
        np.savez(files["payload.npz"], **arrays)
        work = tmp / "work"
        work.mkdir()
        run = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": options.kernel_name, "display_name": "Python 3",
                                                                 "language": "python"}})
        run.cells.append(nbformat.v4.new_code_cell(PREAMBLE.format(
            memory=memory_mb * 2**20, memory_mb=memory_mb)))
        run.cells += [nbformat.v4.new_code_cell(c.source, metadata={"al_cell": cell_locator(position, c.source)})
                      for position, c in enumerate(nb.cells, 1)
                      if c.get("cell_type") == "code" and not _is_check_cell(c)]
        run.cells.append(nbformat.v4.new_code_cell(HARVEST.format(
            source=Path(harvest.__file__).read_text(), drivers=Path(drivers.__file__).read_text(), payload_json=files["payload.json"],
            payload_npz=files["payload.npz"], out_json=files["out.json"], out_npz=files["out.npz"],
            call_timeout=options.call_timeout)))
        # The kernel gets a copy of the package without the references, and where the OS allows
        # it a private root file system without the repository or the submissions (.sandbox).
        jail = sandbox.prepare(tmp, work, exercise, hide=[path.resolve().parent], isolate=options.isolate)
        status, message = _execute(run, work, options, jail)
        row["status"], row["message"] = status, message
        preamble_out = "".join(o.get("text", "") for o in run.cells[0].get("outputs", []))
        row["sandbox"] = ", ".join(json.loads(preamble_out.split("sandbox:", 1)[1])) if "sandbox:" in preamble_out else ""
        try:
            records = json.loads(Path(files["out.json"]).read_text())["records"]
            with np.load(files["out.npz"], allow_pickle=False) as data:
                outputs = [[data[f"r{i}_{j}"] for j in range(r["n"])] for i, r in enumerate(records)]
        except Exception as exc:  # noqa: BLE001 - no results: the kernel never reached the harvest
            row["seconds"] = round(time.perf_counter() - started, 2)
            row["message"] = (message + "; " if message else "") + f"no results collected ({type(exc).__name__})"
            row["questions"] = {q.id: 0.0 for q in exercise.questions}
            return row

    nested = split_outcomes(plan, outcomes_from_records(records, outputs))
    untouched = []
    for (question, cases), outcomes in zip(plan, nested):
        result = judge(question, cases, outcomes)
        row["questions"][question.id] = result.earned
        row["feedback"].append(result.to_dict() | {"report": result.report()})
        if result.not_attempted:
            untouched.append(question.id)
    row["score"] = float(sum(row["questions"].values()))
    row["status"], row["message"] = _attempt_status(row["status"], row["message"], untouched, len(plan))
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def cell_locator(position: int, source: str) -> str:
    """A cell as the student finds it: its position among ALL the notebook's cells (markdown
    included, counted from 1) and its first line. Jupyter shows execution counts, not cell
    numbers, so the first line is what a student can search for."""
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    first = first if len(first) <= 60 else first[:57] + "..."
    return f"cell {position} ({first!r})" if first else f"cell {position}"


def _attempt_status(status: str, message: str, untouched: list[str], n_questions: int) -> tuple[str, str]:
    """``not attempted`` when every question still raises NotImplementedError; otherwise the
    questions that do are named in the message."""
    from . import NOT_ATTEMPTED

    if not untouched:
        return status, message
    if len(untouched) == n_questions and status in ("ok", "error"):
        note = "every answer still raises NotImplementedError"
        return NOT_ATTEMPTED, note + ("; " + message if message else "")
    note = f"not attempted: {', '.join(untouched)}"
    return status, (message + "; " if message else "") + note


def kernel_config(folder: Path):
    """Configuration for the kernels that grading and notebook execution start.

    On POSIX the kernel talks over local IPC sockets (files in ``folder``, an absolute path:
    the kernel runs in another working directory than its client) instead of TCP ports:
    nothing listens on the network while a submission runs, and ipykernel no longer prints
    its warning "Kernel is running over TCP without encryption" once per kernel (a flood
    when a class is graded). Windows has no IPC transport and keeps TCP.
    """
    import os

    from traitlets.config import Config

    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(folder).resolve() / "kernel")
    return config


def _execute(nb, cwd: Path, options: GradeOptions, jail: sandbox.Sandbox | None = None) -> tuple[str, str]:
    """Run ``nb`` cell by cell; return (status, message). Student errors do not stop the run."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    km = sandbox.kernel_manager_class()(kernel_name=options.kernel_name, config=kernel_config(cwd))
    if jail is not None:
        km.sandbox = jail
        km.connection_file = str(jail.folder.resolve() / "kernel.json")  # where the kernel can read it
    client = NotebookClient(
        # An int: older traitlets (Colab's 5.7) reject a float timeout.
        nb, km=km, timeout=math.ceil(options.cell_timeout), allow_errors=True, interrupt_on_timeout=True,
        error_on_timeout={"ename": "CellTimeout", "evalue": f"cell ran past {options.cell_timeout:g} s",
                          "traceback": []},
        kernel_name=options.kernel_name, startup_timeout=120, resources={"metadata": {"path": str(cwd)}},
        config=kernel_config(cwd),
    )
    status, errors = "ok", []
    deadline = time.monotonic() + options.notebook_timeout
    try:
        # cleanup_kc: shut the kernel down at the end although this client did not create its manager.
        with client.setup_kernel(cleanup_kc=True, **({"env": jail.env()} if jail is not None else {})):
            last = len(nb.cells) - 1
            for index, cell in enumerate(nb.cells):
                if time.monotonic() > deadline and index != last:
                    status = "timeout"
                    errors.append(f"notebook ran past {options.notebook_timeout:g} s; remaining cells skipped")
                    continue
                client.execute_cell(cell, index)
                for out in cell.get("outputs", []):
                    if out.get("output_type") != "error" or index in (0, last):
                        continue
                    # Only the grader interrupts the kernel, so KeyboardInterrupt means a timeout.
                    where = cell.get("metadata", {}).get("al_cell", f"cell {index}")
                    if out.get("ename") in ("CellTimeout", "KeyboardInterrupt"):
                        status = "timeout"
                        errors.append(f"{where} ran past {options.cell_timeout:g} s")
                    else:
                        status = "error" if status == "ok" else status
                        errors.append(f"{where}: {out.get('ename')}: {out.get('evalue', '')}"[:200])
    except DeadKernelError:
        return "crashed", "; ".join(errors + ["the kernel died (out of memory, or the submission exited it)"])
    except Exception as exc:  # noqa: BLE001
        return "crashed", "; ".join(errors + [f"{type(exc).__name__}: {exc}"[:200]])
    return status, "; ".join(errors)


def grade_many(paths, options: GradeOptions | None = None, jobs: int = 1) -> list[dict]:
    """Grade several submissions, ``jobs`` at a time; rows come back in the order given."""
    options = options or GradeOptions()
    paths = [Path(p) for p in paths]
    if jobs <= 1 or len(paths) <= 1:
        return [_safe_grade(p, options) for p in paths]
    # "spawn", not fork: forking a process that has loaded TensorFlow (whose threads hold
    # locks) can deadlock the child.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_safe_grade, paths, [options] * len(paths)))


def _safe_grade(path: Path, options: GradeOptions) -> dict:
    try:
        return grade_notebook(path, options)
    except Exception as exc:  # noqa: BLE001 - a grader bug must not lose the row
        return _row(Path(path), options.exercise, "grader-error", f"{type(exc).__name__}: {exc}"[:300])


def write_csv(rows: list[dict], path) -> None:
    import csv

    qids = sorted({q for r in rows for q in r["questions"]})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "file", "exercise", "status", "score", "max_score", *qids, "seconds", "sandbox", "message"])
        for r in rows:
            writer.writerow([r["student"], r["file"], r["exercise"], r["status"], f"{r['score']:g}", f"{r['max_score']:g}",
                             *[f"{r['questions'][q]:g}" if q in r["questions"] else "" for q in qids],
                             r["seconds"], r["sandbox"], r["message"]])


def write_feedback(rows: list[dict], folder) -> None:
    """One Markdown file per submission with every check's result and hint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        lines = [f"# {r['student']} · {r['exercise']}", "",
                 f"Score: **{r['score']:g} / {r['max_score']:g}** (status: {r['status']})", ""]
        if r["message"]:
            lines += [f"Notes: {r['message']}", ""]
        lines += ["```", *[fb["report"] for fb in r["feedback"]], "```"]
        (folder / f"{r['student']}.md").write_text("\n".join(lines) + "\n")
