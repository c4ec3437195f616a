"""Repository hygiene: every notebook has its header, numbering is continuous, exercises match
their solutions and leak nothing, outputs are where they belong, files stay small and portable."""

import json
import re
from pathlib import Path

import nbformat
import pytest

from attention_lessons.authoring import BEGIN, END, expected_header, make_exercise
from attention_lessons.course import EXERCISES, LESSONS, REPOSITORY, colab_url

ROOT = Path(__file__).resolve().parents[1]
LESSON_FILES = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOLUTION_FILES = sorted((ROOT / "solutions").glob("*.ipynb"))
EXERCISE_FILES = sorted((ROOT / "exercises").glob("*.ipynb"))
ALL = LESSON_FILES + SOLUTION_FILES + EXERCISE_FILES


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def read(path: Path):
    return nbformat.read(path, as_version=4)


def test_table_of_contents_matches_the_files():
    assert [p.stem for p in LESSON_FILES] == [stem for stem, _ in LESSONS]
    assert [p.stem for p in SOLUTION_FILES] == [stem for stem, _, _ in EXERCISES]
    assert [p.stem for p in EXERCISE_FILES] == [stem for stem, _, _ in EXERCISES]


def test_lesson_and_exercise_numbering_is_continuous():
    assert [int(p.stem[:2]) for p in LESSON_FILES] == list(range(len(LESSON_FILES)))
    assert [int(p.stem[2:4]) for p in SOLUTION_FILES] == list(range(1, len(SOLUTION_FILES) + 1))


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_notebook_starts_with_title_badge_and_colab_setup_cell(path):
    nb = read(path)
    title, setup = expected_header(rel(path))
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source == title
    assert nb.cells[1].cell_type == "code" and nb.cells[1].source == setup
    assert colab_url(rel(path)) in title and "google.colab" in setup and REPOSITORY in setup


@pytest.mark.parametrize("path", EXERCISE_FILES, ids=rel)
def test_exercises_are_in_sync_with_their_solutions(path):
    expected = make_exercise(read(ROOT / "solutions" / path.name))
    expected.cells[0].source, expected.cells[1].source = expected_header(rel(path))
    actual = read(path)
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in actual.cells] == \
           [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in expected.cells], \
        "exercises/ is stale: run `make exercises`"


@pytest.mark.parametrize("path", SOLUTION_FILES, ids=rel)
def test_no_solution_text_leaks_into_the_exercise(path):
    exercise = (ROOT / "exercises" / path.name).read_text()
    assert BEGIN not in exercise and END not in exercise
    for cell in read(path).cells:
        if "answer" in cell.metadata.get("tags", []):
            region = cell.source.split(BEGIN)[1].split(END)[0]
            for line in region.splitlines():
                line = line.strip()
                if len(line) > 12 and not line.startswith("#"):
                    assert json.dumps(line)[1:-1] not in exercise, f"solution line leaked: {line}"


@pytest.mark.parametrize("path", SOLUTION_FILES, ids=rel)
def test_each_answer_cell_has_a_check_cell_after_it(path):
    cells = [c for c in read(path).cells if c.cell_type == "code"]
    for i, cell in enumerate(cells):
        if "answer" in cell.metadata.get("tags", []):
            assert BEGIN in cell.source and END in cell.source
            assert "check" in cells[i + 1].metadata.get("tags", []) and "check(" in cells[i + 1].source
    assert read(path).metadata["attention_lessons"]["exercise"] == path.stem[:4]


@pytest.mark.parametrize("path", EXERCISE_FILES, ids=rel)
def test_exercises_are_committed_without_outputs(path):
    for cell in read(path).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("path", LESSON_FILES + SOLUTION_FILES, ids=rel)
def test_lessons_and_solutions_carry_outputs_from_one_clean_run(path):
    code = [c for c in read(path).cells if c.cell_type == "code"]
    assert any(c.outputs for c in code), "execute it before committing: nbval compares the stored outputs"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))


@pytest.mark.parametrize("path", LESSON_FILES + SOLUTION_FILES, ids=rel)
def test_every_ignored_output_says_why_and_is_followed_by_an_assertion(path):
    cells = [c for c in read(path).cells if c.cell_type == "code"]
    for i, cell in enumerate(cells):
        if "NBVAL_IGNORE_OUTPUT" in cell.source:
            lines = cell.source.splitlines()
            # nbval honours the marker only as a comment on its own; the reason goes on the next line.
            assert lines[0] == "# NBVAL_IGNORE_OUTPUT", f"nbval ignores {lines[0]!r}: put the marker alone on line 1"
            assert len(lines) > 1 and lines[1].startswith("#") and len(lines[1]) > 15, "say why on line 2"
            assert "assert" in cells[i + 1].source, "an ignored output must be followed by a cell that asserts"


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_notebook_is_under_one_megabyte(path):
    assert path.stat().st_size < 1_000_000


ABSOLUTE = re.compile(r"(/work/|/home/\w|/root/|/tmp/|[A-Z]:\\\\Users)")


@pytest.mark.parametrize("path", ALL + sorted((ROOT / "attention_lessons").rglob("*.py")), ids=rel)
def test_no_absolute_paths(path):
    text = path.read_text()
    if path.suffix == ".ipynb":  # images are base64 and may contain anything
        nb = read(path)
        text = "\n".join([c.source for c in nb.cells] + [o.get("text", "") for c in nb.cells
                                                         for o in c.get("outputs", [])])
    assert not ABSOLUTE.search(text), ABSOLUTE.search(text)


def test_readme_course_map_is_current():
    from attention_lessons.authoring import course_map
    assert course_map() in (ROOT / "README.md").read_text(), "README course map is stale: run `attention-lessons sync`"


def test_readme_course_map_has_a_colab_badge_for_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for path in LESSON_FILES + EXERCISE_FILES:
        assert colab_url(rel(path)) in readme, f"README course map lacks {rel(path)}"


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith("set ") and not line.startswith("cd ")]
    assert ci == ["make test"]


# ----------------------------------------------------------------------------- content checks
# Each of these would have caught an error that students found in the course.

def _prose_and_checked_outputs(nb):
    """(kind, text) of every markdown cell and of every output that nbval compares."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            yield "markdown", cell.source
        elif cell.cell_type == "code" and not cell.source.startswith("# NBVAL_IGNORE_OUTPUT"):
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                for text in (out.get("text", ""), data.get("text/plain", ""), data.get("text/markdown", "")):
                    if text:
                        yield "output", text


def test_start_here_lists_every_lesson_and_exercise():
    """Lesson 00 shows the course's table of contents as generated tables (nbval keeps them current)."""
    from attention_lessons.course import exercises_table, lessons_table
    nb = read(ROOT / "notebooks" / "00_start_here.ipynb")
    shown = [out.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
             for out in c.outputs]
    assert lessons_table() in shown, "lesson 00's list of lessons is stale: re-execute notebooks/00_start_here.ipynb"
    assert exercises_table() in shown, "lesson 00's list of exercises is stale: re-execute notebooks/00_start_here.ipynb"
    handwritten = [c.source for c in nb.cells if c.cell_type == "markdown" and re.search(r"^\| (\d\d|ex\d\d) \|", c.source, re.M)]
    assert not handwritten, "lesson 00 lists lessons by hand; display course.lessons_table()/exercises_table() instead"


STUDENT_HAS_NO_SUCH_SOURCE = re.compile(r"reference notes|neuro\.md|shared/reference|COURSE\.md|the (course|design) notes",
                                        re.I)


@pytest.mark.parametrize("path", ALL, ids=rel)
def test_notebooks_cite_papers_not_notes_students_do_not_have(path):
    for kind, text in _prose_and_checked_outputs(read(path)):
        found = STUDENT_HAS_NO_SUCH_SOURCE.search(text)
        assert not found, f"{kind} refers to {found.group(0)!r}: the course stands on its own; cite the paper"
    for cell in read(path).cells:
        found = STUDENT_HAS_NO_SUCH_SOURCE.search(cell.source)
        assert not found, f"{cell.cell_type} cell refers to {found.group(0)!r}"


MACHINE_DEPENDENT = re.compile(
    r"\b(Xeon|EPYC|Ryzen|Core i[3579]|Apple M[1-4]|Skylake|Graviton)\b"                  # CPU models
    r"|\b(Python|TensorFlow|Keras|NumPy)\s+\d+\.\d+\.\d+"                                # installed versions
    r"|\b\d+(\.\d+)?\s?(ms|µs|seconds?|minutes?)\b|\bwithin a minute\b",                  # wall-clock times
    re.I)


@pytest.mark.parametrize("path", LESSON_FILES + SOLUTION_FILES, ids=rel)
def test_no_machine_dependent_claims_in_prose_or_checked_outputs(path):
    """Stored outputs are compared on every student's machine: no CPU models, installed versions or
    timings unless the cell is marked NBVAL_IGNORE_OUTPUT (and then the prose must not quote them either).
    (Instruction sets such as AVX-512 may be named where a lesson explains why results vary.)"""
    for kind, text in _prose_and_checked_outputs(read(path)):
        found = MACHINE_DEPENDENT.search(text)
        assert not found, f"{kind} states something that depends on the machine: {found.group(0)!r}"


HEAD_SIZE_CALLED_D = re.compile(r"\(B, N, T, D\)|\(B, T, N, D\)|N·D|N\*D\b|N \\cdot D\b")


@pytest.mark.parametrize("path", ALL + sorted((ROOT / "attention_lessons" / "grading").glob("*.py")), ids=rel)
def test_head_size_is_called_H_as_in_lesson_08(path):
    """Lesson 08 and the design name heads (batch, heads, time, head_dim) = (B, N, T, H); D is d_model."""
    text = path.read_text() if path.suffix == ".py" else "\n".join(t for _, t in _prose_and_checked_outputs(read(path)))
    if path.suffix == ".ipynb":
        text += "\n".join(c.source for c in read(path).cells)
    found = HEAD_SIZE_CALLED_D.search(text)
    assert not found, f"the head size is H (D is the model's features): found {found.group(0)!r}"


@pytest.mark.parametrize("path", LESSON_FILES + SOLUTION_FILES + EXERCISE_FILES, ids=rel)
def test_operators_are_defined_where_they_are_used(path):
    """An equation with ⊗ must say in words what it is (lesson 02 once used it undefined)."""
    prose = "\n".join(c.source for c in read(path).cells if c.cell_type == "markdown")
    if "\\otimes" in prose or "⊗" in prose:
        assert re.search(r"outer product|tensor product|Kronecker product", prose), "⊗ is used but never defined"
