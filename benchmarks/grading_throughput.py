"""Grading throughput: 100 synthetic ex02 submissions graded with --jobs 2.

    python benchmarks/grading_throughput.py [--n 100] [--jobs 2]

The mix is what a real class hands in: correct, buggy (classic softmax bugs), blank
(untouched), crashing (a cell raises, or the kernel exits) and looping (an endless loop
in a cell). Writes benchmarks/grading.md and fails if any submission lacks a row.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attention_lessons.grading.batch import GradeOptions, grade_many  # noqa: E402

BUGS = {
    "temperature_multiplied": ("/ temperature", "* temperature"),
    "no_max_subtraction": ("z - z.max(axis=axis, keepdims=True)", "z"),
    "wrong_axis": ("axis=axis", "axis=0"),
}


def variants(n: int):
    solution = nbformat.read(ROOT / "solutions" / "ex02_softmax.ipynb", as_version=4)
    blank = nbformat.read(ROOT / "exercises" / "ex02_softmax.ipynb", as_version=4)
    kinds = ["correct", "buggy", "blank", "crashing", "looping"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        nb = copy.deepcopy(blank if kind == "blank" else solution)
        if kind == "buggy":
            old, new = list(BUGS.values())[i % len(BUGS)]
            cell = next(c for c in nb.cells if "answer" in c.metadata.get("tags", []))
            cell.source = cell.source.replace(old, new)
        elif kind == "crashing":
            source = "raise RuntimeError('broken')" if i % 2 else "import os\nos._exit(1)"
            nb.cells.insert(4, nbformat.v4.new_code_cell(source))
        elif kind == "looping":
            nb.cells.insert(4, nbformat.v4.new_code_cell("while True:\n    pass"))
        yield f"{i:03d}_{kind}", kind, nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cell-timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "grading.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        kinds, paths = {}, []
        for name, kind, nb in variants(args.n):
            path = Path(tmp) / f"{name}.ipynb"
            nbformat.write(nb, path)
            kinds[name] = kind
            paths.append(path)
        start = time.perf_counter()
        rows = grade_many(paths, GradeOptions(cell_timeout=args.cell_timeout), jobs=args.jobs)
        wall = time.perf_counter() - start
    missing = set(kinds) - {r["student"] for r in rows}
    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        by_kind.setdefault(kinds[r["student"]], []).append(r)
    lines = [
        "# Grading throughput",
        "",
        f"`python benchmarks/grading_throughput.py --n {args.n} --jobs {args.jobs}` on {platform.machine()}, "
        f"{platform.python_version()}, cell timeout {args.cell_timeout:g} s.",
        "",
        f"- submissions: {len(paths)}, rows: {len(rows)}, missing rows: {len(missing)}",
        f"- wall time: {wall:.1f} s for {len(paths)} submissions with --jobs {args.jobs} "
        f"= {wall / len(paths):.2f} s per submission",
        "",
        "| kind | n | statuses | median score | median s per submission |",
        "|---|---|---|---|---|",
    ]
    for kind, rs in sorted(by_kind.items()):
        statuses = ", ".join(f"{s} ×{c}" for s, c in Counter(r["status"] for r in rs).items())
        lines.append(f"| {kind} | {len(rs)} | {statuses} | {statistics.median(r['score'] for r in rs):g}/"
                     f"{rs[0]['max_score']:g} | {statistics.median(r['seconds'] for r in rs):.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if missing or len(rows) != len(paths) else 0


if __name__ == "__main__":
    sys.exit(main())
