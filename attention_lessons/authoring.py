"""Maintainers' notebook tools: exercises from solutions, and the standard header cells.

``solutions/exNN_*.ipynb`` is the source of truth. In each code cell tagged ``answer``,
the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` are replaced by
``raise NotImplementedError(...)`` at the same indentation; outputs and execution counts
are dropped. The result is written to ``exercises/`` under the same name.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from .course import EXERCISES, LESSONS, colab_badge, setup_cell_source, title_cell_source

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_PLACEHOLDER = 'raise NotImplementedError("Write your solution here")'


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace every solution region of ``source`` with a ``NotImplementedError``."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {number}: nested {BEGIN}")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}{_PLACEHOLDER}")
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}, line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def make_exercise(solution) -> nbformat.NotebookNode:
    """The student version of a solution notebook (a new notebook; the input is untouched)."""
    nb = nbformat.reads(nbformat.writes(solution), as_version=4)  # a deep copy
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "answer" in cell.metadata.get("tags", []):
            cell.source = strip_solution(cell.source, where=f"cell {index}")
        elif BEGIN in cell.source:
            raise ValueError(f"cell {index} has a solution region but no `answer` tag")
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)  # run timestamps of the solution: noise for students
    nb.metadata.pop("widgets", None)
    return nb


def generate_exercises(root: Path | str = ".") -> list[Path]:
    """Write ``exercises/`` from ``solutions/``; returns the files written."""
    root = Path(root)
    written = []
    for solution in sorted((root / "solutions").glob("ex*.ipynb")):
        nb = make_exercise(nbformat.read(solution, as_version=4))
        nb.cells[0].source, nb.cells[1].source = expected_header(f"exercises/{solution.name}")
        target = root / "exercises" / solution.name
        target.parent.mkdir(exist_ok=True)
        nbformat.write(nb, target)
        written.append(target)
    return written


def _titles() -> dict[str, str]:
    titles = {f"notebooks/{stem}.ipynb": f"Lesson {stem[:2]} · {title}" for stem, title in LESSONS}
    for stem, title, _ in EXERCISES:
        for folder, kind in (("solutions", "Solutions"), ("exercises", "Exercise")):
            titles[f"{folder}/{stem}.ipynb"] = f"{kind} {stem[2:4]} · {title}"
    return titles


def expected_header(path: str) -> tuple[str, str]:
    """(title cell, setup cell) sources that the notebook at ``path`` must start with."""
    titles = _titles()
    if path not in titles:
        raise KeyError(f"{path} is not in the course table of contents (attention_lessons/course.py)")
    return title_cell_source(path, titles[path]), setup_cell_source()


def sync_headers(root: Path | str = ".") -> list[Path]:
    """Rewrite the title and setup cells of every course notebook from :mod:`course`."""
    root = Path(root)
    changed = []
    for rel in _titles():
        path = root / rel
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        title, setup = expected_header(rel)
        if [c.source for c in nb.cells[:2]] != [title, setup]:
            nb.cells[0].source, nb.cells[1].source = title, setup
            nbformat.write(nb, path)
            changed.append(path)
    return changed


MAP_START, MAP_END = "<!-- course-map:start -->", "<!-- course-map:end -->"


def course_map() -> str:
    """The README's course map: one row per lesson and per exercise, each with its Colab badge."""
    lessons = "\n".join(f"| {stem[:2]} | [{title}](notebooks/{stem}.ipynb) | {colab_badge(f'notebooks/{stem}.ipynb')} |"
                        for stem, title in LESSONS)
    exercises = "\n".join(
        f"| {stem[:4]} | [{title}](exercises/{stem}.ipynb) · [solutions](solutions/{stem}.ipynb) | {covers} | "
        f"{colab_badge(f'exercises/{stem}.ipynb')} |" for stem, title, covers in EXERCISES)
    return (f"{MAP_START}\n| # | lesson | open |\n|---|---|---|\n{lessons}\n\n"
            f"| ex | exercise | after lessons | open |\n|---|---|---|---|\n{exercises}\n{MAP_END}")


def sync_readme(root: Path | str = ".") -> bool:
    """Rewrite the course map between the README's markers; True if it changed."""
    path = Path(root) / "README.md"
    text = path.read_text()
    if MAP_START not in text or MAP_END not in text:
        raise ValueError(f"{path} lacks the {MAP_START} … {MAP_END} markers")
    head, rest = text.split(MAP_START, 1)
    new = head + course_map() + rest.split(MAP_END, 1)[1]
    if new != text:
        path.write_text(new)
    return new != text
