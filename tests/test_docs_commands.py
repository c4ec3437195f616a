"""The commands that README.md and docs/instructors.md print work as printed.

A newcomer copies them into a fresh terminal, from the course folder, after `make lab` or
`make test`: no virtual environment is active there, so `attention-lessons ...` alone is
"command not found". Each command line in a ```bash block must start with something such a
terminal has (make with a real target, git, cd, pip, conda, jupyter for the pip/conda ways in)
or with `.venv/bin/...`, which must exist after `make`; and every `.venv/bin/attention-lessons`
sub-command must exist (its --help runs).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "instructors.md"]
#: Programs a fresh terminal has (or the README's other ways in install on the PATH themselves).
FRESH_TERMINAL = {"make", "git", "cd", "pip", "conda", "jupyter", "python", "python3", "source", "bash"}


def command_lines(path: Path) -> list[str]:
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() in ("```bash", "```sh", "```shell") if not inside else False
            continue
        if inside:
            code = line.split(" #", 1)[0].strip()
            if code.startswith("# or:"):
                code = code.removeprefix("# or:").strip()
            elif code.startswith("#"):
                continue
            if code:
                lines.append(code)
    return lines


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


ALL = [(path.relative_to(ROOT).as_posix(), line) for path in DOCS for line in command_lines(path)]


def test_the_docs_print_commands_at_all():
    assert any("attention-lessons grade" in line for _, line in ALL), ALL


@pytest.mark.parametrize("doc,line", ALL, ids=[f"{d}:{line[:40]}" for d, line in ALL])
def test_each_printed_command_runs_in_a_fresh_terminal(doc, line):
    for part in re.split(r"&&|;", line):
        words = shlex.split(part)
        if not words:
            continue
        program = words[0]
        if program.startswith(".venv/bin/"):
            assert (ROOT / program).exists() or not (ROOT / ".venv").exists(), f"{doc}: {program} does not exist"
            continue
        assert program in FRESH_TERMINAL, (
            f"{doc}: `{line}` starts with `{program}`, which a fresh terminal does not have "
            f"(write `.venv/bin/{program}`, or say to activate the environment first)")
        if program == "make":
            targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            assert set(targets) <= make_targets(), f"{doc}: `{line}`: no such make target"


def test_every_printed_attention_lessons_subcommand_exists():
    subcommands = {shlex.split(line)[1] for _, line in ALL
                   if line.startswith(".venv/bin/attention-lessons ") and len(shlex.split(line)) > 1}
    assert {"grade", "links"} <= subcommands, subcommands
    for sub in sorted(subcommands):
        done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", sub, "--help"],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, f"`attention-lessons {sub} --help` failed: {done.stderr[-500:]}"
