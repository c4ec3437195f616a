"""Naive vs chunked (online-softmax) attention against sequence length, TensorFlow, CPU, float32.

    python benchmarks/bench_long.py                  # -> benchmarks/long_sequences_cpu.md
    python benchmarks/bench_long.py --lengths 512 1024 --rounds 3 --out /tmp/long.md

Both implementations compute softmax(Q Kᵀ/√d) V on the same (batch, heads, n, head_dim)
inputs (self-attention, T = S = n), each compiled with ``tf.function``:

* naive: ``tf.nn.softmax(Q Kᵀ) V`` — materialises the (batch, heads, n, n) scores;
* chunked: ``attention_lessons.layers.chunked_attention`` — key chunks in a while loop,
  optionally query blocks too; never more than one (query block × key chunk) tile of scores.

Time: per length, both run in interleaved rounds in this process (after a warm-up call);
the table gives the medians and the median of the paired ratios chunked ÷ naive, which is
what to compare on a shared machine. Peak memory: each (implementation, length) runs ONCE
in a fresh subprocess, which reports ``ru_maxrss`` after the call minus ``ru_maxrss``
measured after importing TensorFlow, creating the inputs and tracing the function —
the resident memory the call itself added (``attention_lessons.memory.peak_rss_in_fresh_process``
with ``attention_lessons.memory.attention_workload``, which lesson 14 uses too; a small launcher
process starts each one, so that it does not inherit this process's peak). The memory runs
happen before the timing runs, so this process's own allocations never add to theirs. Naive
attention is skipped where it would need more than half of the memory available (it needs ~2
score matrices).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from attention_lessons.device import import_tensorflow  # noqa: E402

tf = import_tensorflow()
import numpy as np  # noqa: E402

from attention_lessons.memory import attention_workload, peak_rss_in_fresh_process  # noqa: E402

MIB = 2**20


def workload_options(args) -> dict:
    return dict(batch=args.batch, heads=args.heads, head_dim=args.head_dim, chunk_size=args.chunk_size,
                query_chunk_size=args.query_chunk_size)


def make_run(impl: str, n: int, args):
    """``run()`` computes attention ``impl`` ("naive" or "chunked") once; traced, inputs made (seed 0)."""
    return attention_workload(impl, n, **workload_options(args))


def naive_score_bytes(n: int, args) -> int:
    return args.batch * args.heads * n * n * 4


def available_bytes() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return 1024 * int(line.split()[1])
    except OSError:
        pass
    return 2**62


def child_peak_mib(impl: str, n: int, args) -> float:
    """Peak resident memory (MiB) one call adds, in a fresh process; NaN where not measurable."""
    try:
        peak = peak_rss_in_fresh_process(attention_workload, impl, n, **workload_options(args))
    except RuntimeError as err:
        print(str(err)[-2000:], file=sys.stderr)
        return float("nan")
    return float("nan") if peak is None else peak / MIB


def timed(run) -> float:
    start = time.perf_counter()
    run()                                         # run() ends with .numpy(), which waits for the result
    return time.perf_counter() - start


def bench_times(n: int, run_naive: bool, args) -> dict:
    runs = {"chunked": make_run("chunked", n, args)}     # the same inputs for both (seed 0)
    if run_naive:
        runs["naive"] = make_run("naive", n, args)
    outs = {name: run() for name, run in runs.items()}   # warm-up
    times = {name: [] for name in runs}
    ratios = []
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        got = {name: timed(runs[name]) for name in order}
        for name, t in got.items():
            times[name].append(t)
        if run_naive:
            ratios.append(got["chunked"] / got["naive"])
    row = {"n": n, "chunked_s": statistics.median(times["chunked"])}
    if run_naive:
        row.update(naive_s=statistics.median(times["naive"]), ratio=statistics.median(ratios),
                   max_diff=float(np.abs(outs["chunked"] - outs["naive"]).max()))
    return row


def cpu_model() -> str:
    """The CPU's marketing name (Linux), else what ``platform`` knows."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"CPU {cpu_model()}, {os.cpu_count()} cores, {total:.0f} GiB RAM"


def fmt(x, spec: str, missing: str = "—") -> str:
    return missing if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--query-chunk-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "long_sequences_cpu.md")
    args = parser.parse_args(argv)

    start, load_before = time.perf_counter(), os.getloadavg()
    budget = available_bytes() // 2
    run_naive = {n: 2 * naive_score_bytes(n, args) < budget for n in args.lengths}
    memory = {}
    for n in args.lengths:                      # fresh processes first: nothing of ours is resident yet
        for impl in ("naive", "chunked"):
            memory[impl, n] = child_peak_mib(impl, n, args) if impl == "chunked" or run_naive[n] else None
        print(f"n={n:6d} peak MiB: naive {fmt(memory['naive', n], '.0f', 'skipped')}, "
              f"chunked {memory['chunked', n]:.0f}", flush=True)
    rows = []
    for n in args.lengths:
        row = bench_times(n, run_naive[n], args)
        row.update(naive_mib=memory["naive", n], chunked_mib=memory["chunked", n])
        rows.append(row)
        print(f"n={n:6d} naive {fmt(row.get('naive_s'), '.3f')} s  chunked {row['chunked_s']:.3f} s  "
              f"ratio {fmt(row.get('ratio'), '.2f')}", flush=True)
    load_after = os.getloadavg()

    command = "python benchmarks/bench_long.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        "# Long sequences: naive vs chunked (online-softmax) attention, TensorFlow, CPU, float32",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}; TensorFlow {tf.__version__}, Python {platform.python_version()}; load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after (1-minute).  ",
        f"Self-attention on (batch, heads, n, head_dim) = ({args.batch}, {args.heads}, n, {args.head_dim}); forward "
        f"pass, no mask, both functions in `tf.function`. Chunked: "
        f"`chunked_attention(q, k, v, chunk_size={args.chunk_size}, query_chunk_size={args.query_chunk_size})`.  ",
        f"Time: median of {args.rounds} interleaved rounds after a warm-up call, in one process; ratio = median of "
        "the paired ratios chunked ÷ naive (below 1: chunked is faster).  ",
        "Peak MiB: `ru_maxrss` after one call minus `ru_maxrss` after TensorFlow import, input creation and tracing, "
        "each (implementation, length) in a fresh subprocess. Scores MiB: the (batch, heads, n, n) float32 score "
        "tensor naive attention must hold. max |Δ|: largest difference between the two outputs.",
        "",
        "| n | naive s | chunked s | ratio | naive peak MiB | chunked peak MiB | scores MiB | max abs Δ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {fmt(r.get('naive_s'), '.3f')} | {r['chunked_s']:.3f} | {fmt(r.get('ratio'), '.2f')} | "
            f"{fmt(r['naive_mib'], '.0f', 'skipped')} | {fmt(r['chunked_mib'], '.0f')} | "
            f"{naive_score_bytes(r['n'], args) / MIB:.0f} | {fmt(r.get('max_diff'), '.1e')} |")
    measured = [r for r in rows if r["naive_mib"] is not None]
    if measured:
        r = measured[-1]
        lines += ["", f"**At n = {r['n']}: naive attention added {r['naive_mib']:.0f} MiB of resident memory, chunked "
                      f"attention {r['chunked_mib']:.0f} MiB ({r['naive_mib'] / r['chunked_mib']:.0f}x less), for a "
                      f"time ratio chunked ÷ naive of {r['ratio']:.2f}.** Both do the same FLOPs; chunking bounds the "
                      "memory (one score tile at a time) but, without a fused kernel, not the memory traffic."]
    skipped = [n for n in args.lengths if not run_naive[n]]
    if skipped:
        lines += ["", f"Naive attention skipped at n = {skipped}: it would need more than half the available memory."]
    lines += ["", f"Whole run: {time.perf_counter() - start:.0f} s."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
