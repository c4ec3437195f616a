"""A class's hand-in, every exercise: the mistakes students make, graded as notebooks.

    python benchmarks/grading_class.py [--jobs 1] [--only ex02 ex09]

For every exercise it grades, through the batch grader (a fresh sandboxed kernel per
notebook, exactly as ``attention-lessons grade`` does), the solution, the untouched exercise
and one notebook per mistake of the grading tests (tests/test_grading_mistakes.py,
tests/test_grading_ex09.py, tests/test_grading_ex10.py: each an edit of the solution's
answer cell, as a student writes it), plus three models for exercise 07. It writes
benchmarks/grading_class.md: per exercise the catalogued bugs, the checks, each submission's
score, status, the one hint it got and its grading time; then the time per submission,
median and worst, for the NumPy exercises and the TensorFlow ones separately.

A row whose hint does not contain the fragment the tests expect is marked ✗, and the script
then exits with 1: the batch grader must say what the in-process tests say.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from attention_lessons.course import EXERCISES  # noqa: E402
from attention_lessons.grading import get_exercise  # noqa: E402
from attention_lessons.grading.batch import GradeOptions, grade_many  # noqa: E402
from grading_support import with_edited_answer  # noqa: E402

#: Exercises whose grading loads TensorFlow in the student's kernel (ex06: a Keras layer;
#: ex07: a trained Keras model); the others are NumPy only.
TENSORFLOW = {"ex06", "ex07"}

#: Exercise 07's answer written three wrong ways (edits of the solution's build_model).
EX07_MODELS = [
    ("no_attention_conv1d", "ex07.q1", [
        ("x = layers.TransformerEncoderBlock(embed_dim, num_heads=2, ff_dim=64, dropout=0.0)(x)",
         "x = keras.layers.Conv1D(embed_dim, 3, padding=\"same\", activation=\"relu\")(x)")], "attention"),
    ("attention_without_positions", "ex07.q1", [
        ("layers.PositionalEmbedding(vocab_size, max_length, embed_dim, mask_zero=True)",
         "keras.layers.Embedding(vocab_size, embed_dim, mask_zero=True)")], "order"),
    ("outputs_logits", "ex07.q1", [
        ('keras.layers.Dense(1, activation="sigmoid")', "keras.layers.Dense(1)"),
        ('loss="binary_crossentropy"', "loss=keras.losses.BinaryCrossentropy(from_logits=True)")], "logits"),
]


def mistakes() -> list[tuple[str, str, str, tuple, str | None, str]]:
    """(question, name, function, edits, body, expected hint fragment) for every mistake the tests grade."""
    import test_grading_ex09 as t09
    import test_grading_ex10 as t10
    import test_grading_mistakes as tm

    rows = [(m.question, m.name, m.function, tuple(m.edits), m.body, m.hint) for m in tm.MISTAKES + tm.LAYER_MISTAKES]
    rows += [(t09.QUESTIONS[function], name, function, tuple(edits), None, hint)
             for name, function, edits, hint in t09.STUDENT_BUGS]
    rows += [(t10.QUESTIONS[function], name, function, () if isinstance(change, str) else tuple(change),
              change if isinstance(change, str) else None, hint) for name, function, change, hint in t10.STUDENT_BUGS]
    rows += [(question, name, "build_model", tuple(edits), None, hint) for name, question, edits, hint in EX07_MODELS]
    return rows


def submissions(folder: Path, only: set[str] | None):
    """Write the notebooks; yield (exercise, kind, name, question, path, expected hint fragment)."""
    by_exercise: dict[str, list] = {}
    for row in mistakes():
        by_exercise.setdefault(row[0].split(".")[0], []).append(row)
    for stem, _, _ in EXERCISES:
        exercise = stem[:4]
        if only and exercise not in only:
            continue
        solution = nbformat.read(ROOT / "solutions" / f"{stem}.ipynb", as_version=4)
        untouched = nbformat.read(ROOT / "exercises" / f"{stem}.ipynb", as_version=4)
        for kind, name, question, nb, hint in [("solution", "solution", "", solution, ""),
                                               ("untouched", "untouched", "", untouched, "")] + [
                ("mistake", name, question, with_edited_answer(solution, function, edits, body), hint)
                for question, name, function, edits, body, hint in by_exercise.get(exercise, [])]:
            path = folder / f"{exercise}__{name}.ipynb"
            nbformat.write(nb, path)
            yield exercise, kind, name, question, path, hint


def _hint(row: dict, question: str) -> str:
    """The hint the report shows for ``question`` (one per question), or its first hint."""
    return next((f["hint"] for f in row["feedback"] if f.get("hint") and f["id"] == question),
                next((f["hint"] for f in row["feedback"] if f.get("hint")), ""))


def _short(text: str, n: int = 150) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at a time (1: clean per-submission times)")
    parser.add_argument("--only", nargs="*", help="exercise ids (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "grading_class.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="al-class-") as tmp:
        plan = list(submissions(Path(tmp), set(args.only) if args.only else None))
        start = time.perf_counter()
        rows = grade_many([p for *_, p, _ in plan], GradeOptions(), jobs=args.jobs)
        wall = time.perf_counter() - start

    lines = ["# A class's hand-in, graded", "",
             f"`python benchmarks/grading_class.py --jobs {args.jobs}` on {platform.machine()}, Python "
             f"{platform.python_version()}: {len(plan)} notebooks in {wall:.0f} s. Each is graded as "
             "`attention-lessons grade` grades it (its own sandboxed kernel). Mistakes are the grading tests' "
             "student-style edits of the solution's answer cells; ✓ = the hint the tests expect.", ""]
    times: dict[str, list[float]] = {"NumPy": [], "TensorFlow": []}
    wrong = 0
    for exercise in sorted({e for e, *_ in plan}):
        spec = get_exercise(exercise)
        # A bug is listed on every check it fails; counted once per question.
        catalogue = sum(len({id(b) for c in q.checks for b in c.bugs}) for q in spec.questions)
        checks = sum(len(q.checks) for q in spec.questions)
        lines += [f"## {exercise} · {spec.title} ({spec.points:g} points)", "",
                  f"{len(spec.questions)} question{'s' * (len(spec.questions) > 1)}, {checks} checks, {catalogue} catalogued bugs.", "",
                  "| submission | question | score | status | the hint shown (for that question) | s |",
                  "|---|---|---|---|---|---|"]
        for (ex, kind, name, question, _, expected), row in zip(plan, rows):
            if ex != exercise:
                continue
            hint = _hint(row, question)
            mark = ""
            if kind == "mistake":
                ok = expected.lower() in hint.lower()
                wrong += not ok
                mark = " ✓" if ok else " ✗ (expected: " + _short(expected, 60) + ")"
            times["TensorFlow" if exercise in TENSORFLOW else "NumPy"].append(row["seconds"])
            status = row["status"] + (f" ({_short(row['message'], 80)})" if row["status"] not in ("ok", "not attempted")
                                      else "")
            lines.append(f"| {name} | {question or 'all'} | {row['score']:g}/{row['max_score']:g} | {status} | "
                         f"{_short(hint) or '—'}{mark} | {row['seconds']:.1f} |")
        lines.append("")
    lines += ["## Time per submission", "", "| exercises | submissions | median s | worst s |", "|---|---|---|---|"]
    for group, ts in times.items():
        if ts:
            lines.append(f"| {group} | {len(ts)} | {statistics.median(ts):.1f} | {max(ts):.1f} |")
    lines += ["", f"Hints that differ from the tests' expectation: {wrong}."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if wrong or len(rows) != len(plan) else 0


if __name__ == "__main__":
    sys.exit(main())
