"""Execute notebooks in place (maintainers): ``python scripts/execute_notebooks.py NB...``.

Each notebook runs top to bottom in a fresh kernel of the current environment, from its
own folder, and is saved with its outputs (what nbval compares). Wall times are printed
and, with ``--times FILE``, written as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from attention_lessons.grading.batch import kernel_config


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="kernel-") as sockets:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                                resources={"metadata": {"path": str(path.parent)}}, config=kernel_config(sockets))
        start = time.perf_counter()
        client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--times", type=Path, help="write {notebook: seconds} JSON here")
    args = parser.parse_args(argv)
    times = {}
    for path in args.notebooks:
        seconds = execute(path, args.timeout)
        times[str(path)] = round(seconds, 1)
        print(f"{seconds:6.1f} s  {path}", flush=True)
    if args.times:
        args.times.write_text(json.dumps(times, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
