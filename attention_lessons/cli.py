"""The ``attention-lessons`` command: doctor, grade, exercises, links, sync, bench."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _doctor(args) -> int:
    from .device import doctor

    return 0 if doctor().ok else 1


def _grade(args) -> int:
    from .grading.batch import GradeOptions, grade_many, write_csv, write_feedback

    paths = []
    for p in args.submissions:
        p = Path(p)
        paths += sorted(p.glob("*.ipynb")) if p.is_dir() else [p]
    if not paths:
        print("no submissions found", file=sys.stderr)
        return 2
    options = GradeOptions(cell_timeout=args.cell_timeout, call_timeout=args.call_timeout,
                           notebook_timeout=args.notebook_timeout, memory_mb=args.memory_mb,
                           seed=args.seed, exercise=args.exercise, isolate=not args.no_isolate)
    rows = grade_many(paths, options, jobs=args.jobs)
    for r in rows:
        print(f"{r['student']:<30} {r['status']:<16} {r['score']:g}/{r['max_score']:g}  {r['seconds']:.1f} s"
              + (f"  {r['message'][:80]}" if r["message"] else ""))
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    if args.feedback:
        write_feedback(rows, args.feedback)
    return 0


def _exercises(args) -> int:
    from .authoring import generate_exercises

    for path in generate_exercises(args.root):
        print(f"wrote {path}")
    return 0


def _sync(args) -> int:
    from .authoring import sync_headers, sync_readme

    changed = sync_headers(args.root)
    if sync_readme(args.root):
        changed.append(Path(args.root) / "README.md")
    print("\n".join(f"updated {p}" for p in changed) or "all headers up to date")
    return 0


def _links(args) -> int:
    from .course import EXERCISES, LESSONS, colab_url, nbgitpuller_url

    if (args.repo or args.branch) and not args.hub:
        print("attention-lessons links: --repo and --branch need --hub (Colab links always open the public repository).",
              file=sys.stderr)
        return 2
    paths = []
    if args.what in ("lessons", "all"):
        paths += [f"notebooks/{stem}.ipynb" for stem, _ in LESSONS]
    if args.what in ("exercises", "all"):
        paths += [f"exercises/{stem}.ipynb" for stem, _, _ in EXERCISES]
    for path in paths:
        link = nbgitpuller_url(args.hub, path, args.repo, args.branch) if args.hub else colab_url(path)
        print(f"{path}\t{link}")
    return 0


#: ``attention-lessons bench`` name → the repository's benchmark script (what ``make bench`` runs).
BENCHMARKS = {"mha": "benchmarks/bench_mha.py", "grading": "benchmarks/grading_throughput.py",
              "class": "benchmarks/grading_class.py", "long": "benchmarks/bench_long.py",
              "modern": "benchmarks/bench_modern.py"}


def _bench(args) -> int:
    import subprocess

    root = Path(args.root).resolve()
    unknown = [name for name in args.which if name not in ("all", *BENCHMARKS)]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from all, {', '.join(BENCHMARKS)}.")
    chosen = list(BENCHMARKS) if not args.which or "all" in args.which else args.which
    missing = [BENCHMARKS[name] for name in chosen if not (root / BENCHMARKS[name]).is_file()]
    if missing:
        raise ValueError(f"{', '.join(missing)} not found under `--root` {root}: the benchmarks live in the "
                         "course repository (clone it and run this there, or `make bench`).")
    for name in chosen:
        command = [sys.executable, str(root / BENCHMARKS[name])]
        print("$ " + " ".join(command), flush=True)
        if not args.dry_run and subprocess.run(command, cwd=root).returncode != 0:
            return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="attention-lessons", description="The attention course's helper command.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("doctor", help="check Python, NumPy, TensorFlow, Keras and GPUs").set_defaults(run=_doctor)

    g = sub.add_parser("grade", help="grade submitted notebooks (each in its own kernel)")
    g.add_argument("submissions", nargs="+", help="notebooks, or folders of notebooks")
    g.add_argument("--csv", help="write one row per submission here")
    g.add_argument("--json", help="write every check, hint and message here")
    g.add_argument("--feedback", metavar="DIR", help="write one Markdown feedback file per student here")
    g.add_argument("--exercise", help="exercise id (default: from the notebook's metadata or file name)")
    g.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    g.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell (default 60)")
    g.add_argument("--call-timeout", type=float, default=10.0, help="seconds per call of a student's function")
    g.add_argument("--notebook-timeout", type=float, default=600.0, help="seconds per submission (default 600)")
    g.add_argument("--memory-mb", type=int, default=4096, help="address-space limit of the student's kernel")
    g.add_argument("--seed", type=int, default=20261122, help="seed of the grader's inputs")
    g.add_argument("--no-isolate", action="store_true",
                   help="Linux: do not run kernels in a private root file system (only to troubleshoot a kernel "
                        "that will not start there; the references stay hidden from imports only)")
    g.set_defaults(run=_grade)

    e = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    e.add_argument("--root", default=".", help="repository root (default: .)")
    e.set_defaults(run=_exercises)

    links = sub.add_parser("links", help="print one link per notebook (JupyterHub via nbgitpuller, or Colab)")
    links.add_argument("--hub", help="JupyterHub URL, e.g. https://hub.example.edu (default: Colab links)")
    links.add_argument("--what", choices=["lessons", "exercises", "all"], default="all")
    links.add_argument("--repo", help="with --hub: the git URL students' hubs clone the course from "
                                      "(default: the course's public repository; e.g. a fork or a local mirror)")
    links.add_argument("--branch", help="with --hub: the branch to clone (default: main)")
    links.set_defaults(run=_links)

    s = sub.add_parser("sync", help="rewrite notebook title/badge and setup cells and the README course map")
    s.add_argument("--root", default=".")
    s.set_defaults(run=_sync)

    b = sub.add_parser("bench", help="run the benchmarks (results go to benchmarks/*.md, as with `make bench`)")
    b.add_argument("which", nargs="*", metavar="{all,mha,grading,class,long,modern}",
                   help="which benchmarks (default all): mha (ours vs Keras), grading (throughput), "
                        "class (every exercise's student-style mistakes: score, hint, time), "
                        "long (naive vs chunked), modern (grouped-query and sliding-window "
                        "attention vs Keras, KV-cache decoding vs recomputing)")
    b.add_argument("--root", default=".", help="repository root (default: .)")
    b.add_argument("--dry-run", action="store_true", help="print the commands only")
    b.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as exc:  # bad input: one clear line, not a traceback
        print(f"attention-lessons {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
