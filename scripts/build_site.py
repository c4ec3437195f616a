"""Build the course's website (``make site``): the notebooks with their stored outputs, as static HTML.

Sphinx + myst-nb + sphinx-book-theme, all from pip, and MathJax from npm (node/node_modules): nothing
is fetched while building, and the pages load nothing from another host. Steps:

1. Stage (build/site-src, wiped first): processed copies of every notebook listed in
   ``attention_lessons.course`` LESSONS and EXERCISES (lessons, exercises, solutions), the original
   files for download, the home page (the README's introduction and course map) and the instructors'
   guide (docs/instructors.md).
2. ``sphinx-build -c site build/site-src build/site`` (build/site wiped first, so a renamed notebook
   leaves no stale page behind).

The processing of a notebook (the repository's files are never changed):

* the "Open in Colab" badge of the title cell points at a local copy of the badge image (the site must
  load nothing from the network), and a "Download the notebook" link to the repository's file follows it;
* every figure gets alt text (myst-nb's cell metadata ``mystnb.image.alt``) unless the notebook already
  sets one: "Figure: " + the titles the cell's code gives its plots (``title=``, ``set_title``,
  ``suptitle``; f-string fields shown as "…") + the first sentence of the markdown cell right after
  the figure, which by the course's rules says what to see in it (or, when that cell starts a new
  section, the last sentence of the markdown before the figure);
* the widget state is dropped (the site shows the PNG that each widget stores next to its view);
* an exercise ends with a link to its solution; a solution starts with a note pointing to its exercise.

Navigation follows the course: each exercise comes right after the last lesson it covers, and every
solution comes after all exercises, so a student reaches an exercise before its solution.

``--strict`` (what ``make test`` uses) fails when a listed notebook is missing and turns Sphinx
warnings into errors; without it (development, while notebooks are being written) missing notebooks
are left out with a warning.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from attention_lessons.course import BRANCH, EXERCISES, LESSONS, REPOSITORY, SITE  # noqa: E402

STAGE = ROOT / "build" / "site-src"
OUT = ROOT / "build" / "site"
DOCTREES = ROOT / "build" / "site-doctrees"
CONF = ROOT / "site"
BADGE = "_course/colab-badge.svg"
COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"

# A plot's title in the code of a cell: title="…" (also as a keyword of the course's plotting helpers),
# ax.set_title("…"), fig.suptitle("…"), plt.title("…"), ax.set(title="…").
TITLE = re.compile(r"""(?:\btitle\s*=\s*|\b(?:set_title|suptitle|title)\(\s*)(f?)("|')((?:\\.|(?!\2).)*)\2""")


# --------------------------------------------------------------------------- what to build

def course_pages() -> list[tuple[str, str]]:
    """(kind, repository path) of every page, in course order.

    Kind is "lesson", "exercise" or "solution". Each exercise follows the last lesson it covers
    ("02–03" → after lesson 03); the solutions follow all the lessons and exercises.
    """
    after: dict[str, list[str]] = {}
    for stem, _, covers in EXERCISES:
        last = re.findall(r"\d+", covers)[-1].zfill(2)
        after.setdefault(last, []).append(stem)
    numbers = {stem[:2] for stem, _ in LESSONS}
    orphans = [stem for last, stems in after.items() if last not in numbers for stem in stems]
    pages = []
    for stem, _ in LESSONS:
        pages.append(("lesson", f"notebooks/{stem}.ipynb"))
        pages += [("exercise", f"exercises/{ex}.ipynb") for ex in after.get(stem[:2], [])]
    pages += [("exercise", f"exercises/{ex}.ipynb") for ex in orphans]
    pages += [("solution", f"solutions/{stem}.ipynb") for stem, _, _ in EXERCISES]
    return pages


# --------------------------------------------------------------------------- markdown helpers

def plain_text(markdown: str) -> str:
    """Markdown (with TeX) as one line of plain text for alt text."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", markdown)          # images → their alt
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)               # links → their text
    text = re.sub(r"<[^>]+>", "", text)                                 # HTML tags
    text = re.sub(r"\\(?:mathrm|text|mathbf|operatorname|boldsymbol)\{([^}]*)\}", r"\1", text)
    text = re.sub(r"\\([A-Za-z]+)", r"\1", text)                       # \alpha → alpha
    text = re.sub(r"[$`*_{}]|^#+\s*|^>\s*", "", text, flags=re.M)
    return re.sub(r"\s+", " ", text).strip()


def sentences(markdown: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?:])\s+(?=[A-Z(\"'])", plain_text(markdown)) if s]


def figure_titles(source: str) -> list[str]:
    titles = []
    for is_f, _, text in TITLE.findall(source):
        if is_f:
            text = re.sub(r"\{[^{}]*\}", "…", text)
        text = plain_text(text.replace("\\n", " ").replace("\\\\", "\\")).rstrip(" .:;,")
        if text and text not in titles:
            titles.append(text)
    return titles


def alt_text(cells: list, index: int, n_images: int) -> str:
    """Alt text of the figure(s) of code cell ``index``: plot titles + what the markdown says about them."""
    titles = figure_titles(cells[index].source)
    after = cells[index + 1] if index + 1 < len(cells) else None
    said = ""
    if after is not None and after.cell_type == "markdown" and not after.source.lstrip().startswith("#"):
        said = " ".join(sentences(after.source)[:1])
    if not said:
        before = next((c for c in reversed(cells[:index]) if c.cell_type == "markdown"), None)
        if before is not None:
            paragraphs = [p for p in before.source.split("\n\n") if p.strip() and not p.lstrip().startswith("#")]
            said = (sentences(paragraphs[-1]) or [""])[-1] if paragraphs else ""
    head = "Figure" if n_images == 1 else f"{n_images} figures"
    parts = [f"{head}: " + "; ".join(titles) + "." if titles else f"{head}."]
    if said:
        parts.append(said if len(said) <= 300 else said[:297].rsplit(" ", 1)[0] + " …")
    return " ".join(parts)


# --------------------------------------------------------------------------- staging

def process_notebook(path: str, kind: str, present: set[str]) -> dict:
    """The staged copy of the repository's notebook ``path`` (as JSON), see the module's docstring."""
    nb = json.loads((ROOT / path).read_text())
    cells = nb["cells"]
    for cell in cells:                       # nbformat stores sources as lists of lines
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])

    class Cell(dict):
        cell_type = property(lambda self: self["cell_type"])
        source = property(lambda self: self["source"])

    view = [Cell(c) for c in cells]
    depth = "../" * path.count("/")
    title = cells[0]
    if title["cell_type"] != "markdown" or COLAB_BADGE_URL not in title["source"]:
        raise SystemExit(f"{path}: the first cell is not the course's title cell with a Colab badge")
    title["source"] = (title["source"].replace(COLAB_BADGE_URL, f"{depth}{BADGE}").replace("Open In Colab", "Open in Colab")
                       + f" · [Download the notebook (.ipynb)](path:{depth}_original/{path})")
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        n_images = sum("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
                       for o in cell.get("outputs", []))
        if n_images:
            image = cell.setdefault("metadata", {}).setdefault("mystnb", {}).setdefault("image", {})
            image.setdefault("alt", alt_text(view, index, n_images))
    nb.get("metadata", {}).pop("widgets", None)
    stem = Path(path).stem
    if kind == "exercise" and f"solutions/{stem}.ipynb" in present:
        cells.append({"cell_type": "markdown", "metadata": {}, "id": "site-solution-link",
                      "source": f"**When you have tried every question:** compare with "
                                f"[the solution of {stem[:4]}](../solutions/{stem}.ipynb)."})
    if kind == "solution":
        exercise = (f"[exercise {stem[2:4]}](../exercises/{stem}.ipynb)" if f"exercises/{stem}.ipynb" in present
                    else f"exercise {stem[2:4]}")
        cells.insert(1, {"cell_type": "markdown", "metadata": {}, "id": "site-solution-note",
                         "source": f"```{{note}}\nThese are the solutions of {exercise}. Try the exercise first: "
                                   "its checks tell you at once whether your answer is right.\n```"})
    return nb


def github_blob(path: str) -> str:
    return f"{REPOSITORY}/blob/{BRANCH}/{path}"


def rewrite_links(markdown: str, base: str, present: set[str], pages: set[str]) -> str:
    """Links of a repository markdown file at ``base`` (folder), rewritten for the site.

    Links to pages of the site stay relative (MyST resolves them to the pages); links to other files
    of the repository go to GitHub; links to listed notebooks that are missing (development only)
    become plain text.
    """
    def fix(match: re.Match) -> str:
        bang, text, target = match.group(1), match.group(2), match.group(3)
        if re.match(r"^[a-z]+:|^#", target) or bang:
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (Path(base) / path).as_posix() if base else path
        resolved = re.sub(r"(^|/)[^/]+/\.\./", r"\1", resolved)
        if resolved in pages:
            site_path = "instructors.md" if resolved == "docs/instructors.md" else resolved
            return f"[{text}]({site_path}{'#' + anchor if anchor else ''})"
        if re.fullmatch(r"(notebooks|exercises|solutions)/[^/]+\.ipynb", resolved) and resolved not in present:
            return text
        return f"[{text}]({github_blob(resolved)}{'#' + anchor if anchor else ''})"

    return re.sub(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)", fix, markdown)


def home_page(present: set[str], pages: list[tuple[str, str]]) -> str:
    """index.md: the README's introduction and course map, then the navigation (toctrees)."""
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- course-map:start -->", "<!-- course-map:end -->"
    if start not in readme or end not in readme:
        raise SystemExit("README.md has no course map (<!-- course-map:start --> … <!-- course-map:end -->)")
    head, rest = readme.split(end, 1)
    after_map = rest.split("\n## ", 1)[0]
    text = (head + end + after_map).replace(COLAB_BADGE_URL, BADGE).replace("Open In Colab", "Open in Colab")
    text = re.sub(r"^# attention-lessons\s*$", "# Attention lessons", text, count=1, flags=re.M)
    site_pages = present | {"docs/instructors.md"}
    text = rewrite_links(text, "", present, site_pages)
    text += ("\n## For instructors\n\n[The instructors' guide](instructors.md) covers running the course for a class "
             "(local JupyterLab, Colab, a JupyterHub with nbgitpuller links) and grading the exercises.\n\n"
             f"The course's source is at <{REPOSITORY}>; this site is published at <{SITE}>.\n")

    def toctree(caption: str, entries: list[str]) -> str:
        return "\n```{toctree}\n:hidden:\n:caption: " + caption + "\n\n" + "\n".join(entries) + "\n```\n"

    course = [p.removesuffix(".ipynb") for kind, p in pages if kind != "solution" and p in present]
    solutions = [p.removesuffix(".ipynb") for kind, p in pages if kind == "solution" and p in present]
    return text + toctree("Lessons and exercises", course) + toctree("Solutions", solutions) + \
        toctree("For instructors", ["instructors"])


def stage(strict: bool) -> list[str]:
    """Write build/site-src; returns the repository paths of the notebooks on the site."""
    pages = course_pages()
    missing = [p for _, p in pages if not (ROOT / p).exists()]
    if missing and strict:
        raise SystemExit("build_site: listed in attention_lessons/course.py but missing:\n  " + "\n  ".join(missing))
    for path in missing:
        print(f"build_site: warning: {path} is listed in attention_lessons/course.py but does not exist: left out",
              file=sys.stderr)
    present = {p for _, p in pages if (ROOT / p).exists()}
    shutil.rmtree(STAGE, ignore_errors=True)
    (STAGE / "_course").mkdir(parents=True)
    shutil.copy(CONF / "_static" / "colab-badge.svg", STAGE / BADGE)
    for kind, path in pages:
        if path not in present:
            continue
        (STAGE / path).parent.mkdir(parents=True, exist_ok=True)
        (STAGE / "_original" / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, STAGE / "_original" / path)
        (STAGE / path).write_text(json.dumps(process_notebook(path, kind, present), indent=1, ensure_ascii=False))
    (STAGE / "index.md").write_text(home_page(present, pages))
    guide = (ROOT / "docs" / "instructors.md").read_text()
    (STAGE / "instructors.md").write_text(rewrite_links(guide, "docs", present, present | {"docs/instructors.md"}))
    return [p for _, p in pages if p in present]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--strict", action="store_true",
                        help="fail on a listed notebook that is missing and on any Sphinx warning (make test)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    start = time.monotonic()
    notebooks = stage(args.strict)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.rmtree(DOCTREES, ignore_errors=True)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", *(["-W", "--keep-going"] if args.strict else []),
               "-c", str(CONF), "-d", str(DOCTREES), str(STAGE), str(args.out)]
    done = subprocess.run(command, cwd=ROOT)
    if done.returncode:
        print(f"build_site: sphinx-build failed (exit {done.returncode}): {' '.join(command)}", file=sys.stderr)
        return done.returncode
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"build_site: {len(notebooks)} notebooks → {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}"
          f"/index.html ({size / 2**20:.1f} MiB) in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
