"""The `attention-lessons` command and the exercise generator."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attention_lessons.authoring import strip_solution

ROOT = Path(__file__).resolve().parents[1]


def test_strip_solution_keeps_signature_and_indentation():
    src = "def f(x):\n    '''doc'''\n    # BEGIN SOLUTION\n    return x + 1\n    # END SOLUTION"
    out = strip_solution(src)
    assert "return x + 1" not in out
    assert out.endswith('    raise NotImplementedError("Write your solution here")')
    compile(out, "cell", "exec")


@pytest.mark.parametrize("src, message", [
    ("# BEGIN SOLUTION\nx = 1", "without # END"),
    ("x = 1\n# END SOLUTION", "without # BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", "nested"),
])
def test_malformed_solution_regions_are_errors(src, message):
    with pytest.raises(ValueError, match=message):
        strip_solution(src)


def test_grade_command_writes_csv_json_and_feedback(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("ex01_weighted_sums.ipynb",):
        (subs / f"alice_{name}").write_bytes((ROOT / "solutions" / name).read_bytes())
        (subs / f"bob_{name}").write_bytes((ROOT / "exercises" / name).read_bytes())
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "grade", str(subs),
                           "--csv", str(tmp_path / "g.csv"), "--json", str(tmp_path / "g.json"),
                           "--feedback", str(tmp_path / "fb"), "--jobs", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "g.csv"))}
    assert rows["alice_ex01_weighted_sums"]["score"] == "7.5" and rows["bob_ex01_weighted_sums"]["score"] == "0"
    assert rows["alice_ex01_weighted_sums"]["ex01.q1"] == "3"
    detail = json.loads((tmp_path / "g.json").read_text())
    assert any("Replace `raise NotImplementedError`" in c["hint"] for r in detail for f in r["feedback"] for c in f["checks"])
    assert "7.5 / 7.5" in (tmp_path / "fb" / "alice_ex01_weighted_sums.md").read_text()


@pytest.mark.skipif(os.name != "posix", reason="Windows has no IPC transport: its kernels keep TCP")
def test_grading_kernels_use_ipc_and_print_no_tcp_warning(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "carol_ex01_weighted_sums.ipynb").write_bytes((ROOT / "exercises" / "ex01_weighted_sums.ipynb").read_bytes())
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "grade", str(subs),
                           "--csv", str(tmp_path / "g.csv")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "without encryption" not in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]


def test_grade_command_with_no_notebooks_fails_clearly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "grade", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no submissions" in done.stderr


def test_exercises_command_regenerates_identical_files(tmp_path):
    (tmp_path / "solutions").mkdir()
    for p in (ROOT / "solutions").glob("*.ipynb"):
        (tmp_path / "solutions" / p.name).write_bytes(p.read_bytes())
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "exercises", "--root", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for p in (ROOT / "exercises").glob("*.ipynb"):
        assert nbformat.read(tmp_path / "exercises" / p.name, 4) == nbformat.read(p, 4)


def test_links_command_prints_one_nbgitpuller_link_per_notebook():
    from urllib.parse import parse_qs, urlparse

    from attention_lessons.course import EXERCISES, LESSONS, REPOSITORY
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "links", "--hub", "https://hub.example.edu/"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(LESSONS) + len(EXERCISES)
    path, url = lines[0].split("\t")
    assert path == "notebooks/00_start_here.ipynb"
    parsed = urlparse(url)
    assert url.startswith("https://hub.example.edu/hub/user-redirect/git-pull?")
    query = parse_qs(parsed.query)
    assert query["repo"] == [REPOSITORY] and query["urlpath"][0].endswith("/notebooks/00_start_here.ipynb")


def test_links_command_rejects_a_hub_that_is_not_a_url():
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "links", "--hub", "hub.example.edu"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "http(s) URL" in done.stderr


def test_bench_command_lists_the_same_scripts_as_make_bench():
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "bench", "--dry-run", "--root", str(root)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    scripts = [line.split()[-1] for line in done.stdout.splitlines()]
    make_bench = (root / "Makefile").read_text().split("\nbench:")[1].split("\n\n")[0]
    assert scripts and all(Path(s).relative_to(root).as_posix() in make_bench for s in scripts)
    assert len(scripts) == make_bench.count("benchmarks/")


def test_bench_command_outside_the_repository_says_where_the_benchmarks_are(tmp_path):
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "bench", "long", "--root", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "benchmarks/bench_long.py not found" in done.stderr and "make bench" in done.stderr


def test_bench_command_rejects_an_unknown_benchmark_by_name():
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "bench", "fastest"], capture_output=True, text=True)
    assert done.returncode == 2 and "'fastest'" in done.stderr
