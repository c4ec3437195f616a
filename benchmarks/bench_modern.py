"""Today's attention layers: grouped queries, sliding windows and KV-cache decoding, one process.

    python benchmarks/bench_modern.py            # CPU table -> benchmarks/results_modern_cpu.md
    python benchmarks/bench_modern.py --help     # lengths, rounds, batch, ...

Part A — ours vs Keras, same weights. For every configuration (grouped-query attention with
Nq = 8 query heads over Nkv = 2 or 1 key/value heads: our ``GroupQueryAttention`` vs
``keras.layers.GroupQueryAttention``; a causal sliding window: our ``MultiHeadAttention`` vs
``keras.layers.MultiHeadAttention``, both with ``sliding_window``), sequence length T and
mode (eager / tf.function), both layers run in interleaved rounds (ours then Keras, then
Keras then ours, ...). The table reports the median of the paired ratios ours ÷ Keras and
their spread (min-max), after checking that both layers give the same output.

Part B — KV-cache decoding. Generating one token after a prefix of P tokens, two ways, with
the same weights, both compiled with ``tf.function``:

* cached: ``CachedMultiHeadAttention`` with a fixed-size cache ``(B, 2, S_max, N, H)``,
  ``S_max = P + steps``, filled by one prefill call; each step projects only the new token,
  writes its key/value at ``cache_update_index`` (a tensor, so the step is traced once) and
  attends over the cache under ``compute_causal_mask``;
* recompute: a full causal forward of ``MultiHeadAttention`` over the P + 1 tokens, keeping
  the last position (what decoding without a cache does at every step).

Steps of the two alternate; the speed-up is the median of the paired ratios
recompute ÷ cached. Ratios from one process are what to compare: absolute times on shared
2-core machines vary by up to ~1.7× between runs.
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from attention_lessons.device import import_tensorflow  # noqa: E402

tf = import_tensorflow()
import keras  # noqa: E402
import numpy as np  # noqa: E402

from attention_lessons.layers import MultiHeadAttention  # noqa: E402
from attention_lessons.modern import (  # noqa: E402
    CachedMultiHeadAttention,
    GroupQueryAttention,
    compute_causal_mask,
)


def _sync(out) -> None:
    """Wait for the computation: reading one value forces it to finish."""
    first = out[0] if isinstance(out, (list, tuple)) else out
    _ = np.asarray(tf.reshape(first, [-1])[:1])


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def paired(runs: dict, rounds: int, warmup: int) -> tuple[list, dict]:
    """Interleaved timings of the two entries of ``runs``; ratios first ÷ second."""
    a, b = list(runs)
    for run in runs.values():          # trace / warm up
        for _ in range(warmup):
            run()
    times = {a: [], b: []}
    ratios = []
    for r in range(rounds):
        order = (a, b) if r % 2 == 0 else (b, a)
        got = {name: timed(runs[name]) for name in order}
        for name in got:
            times[name].append(got[name])
        ratios.append(got[a] / got[b])
    return ratios, times


# ------------------------------------------------------------------ Part A: ours vs Keras

def make_layers(kind: str, args):
    """(ours, Keras's, description) for a configuration name: gqa<Nkv>[-window] or mha-window."""
    n_q, h = args.heads, args.d_model // args.heads
    base, _, suffix = kind.partition("-")
    if suffix not in ("", "window") or not (base == "mha" or base[3:].isdigit() and base.startswith("gqa")):
        raise ValueError(f"unknown configuration {kind!r}: gqa<Nkv>, gqa<Nkv>-window or mha-window")
    window = args.window if suffix else None
    where = f", sliding_window={window}" if window else ""
    if base == "mha":
        return (MultiHeadAttention(n_q, h, sliding_window=window),
                keras.layers.MultiHeadAttention(n_q, h, sliding_window=window), f"MHA N={n_q}{where}")
    n_kv = int(base[3:])
    return (GroupQueryAttention(h, n_q, n_kv, sliding_window=window),
            keras.layers.GroupQueryAttention(h, n_q, n_kv, sliding_window=window),
            f"GQA Nq={n_q}, Nkv={n_kv}{where}")


def bench_vs_keras(kind: str, t: int, mode: str, args) -> dict:
    keras.utils.set_random_seed(0)
    x = tf.random.normal((args.batch, t, args.d_model), dtype=tf.float32)
    ours, theirs, what = make_layers(kind, args)
    theirs(x, x, use_causal_mask=True)
    ours(x, x, use_causal_mask=True)
    ours.set_weights(theirs.get_weights())
    error = float(tf.reduce_max(tf.abs(ours(x, x, use_causal_mask=True) - theirs(x, x, use_causal_mask=True))))
    if not error < 1e-4:
        raise AssertionError(f"{what}, T={t}: ours and Keras differ by {error:g} with the same weights")

    def step(layer):
        fn = lambda: layer(x, x, use_causal_mask=True)  # noqa: E731
        if mode == "function":
            fn = tf.function(fn)
        return lambda: _sync(fn())

    ratios, times = paired({"ours": step(ours), "keras": step(theirs)}, args.rounds, args.warmup)
    return {"config": what, "T": t, "mode": mode, "ratio": statistics.median(ratios),
            "lo": min(ratios), "hi": max(ratios), "ours_ms": 1e3 * statistics.median(times["ours"]),
            "keras_ms": 1e3 * statistics.median(times["keras"]), "max_diff": error}


# ------------------------------------------------------------------ Part B: KV-cache decoding

def bench_decoding(prefix: int, args) -> dict:
    keras.utils.set_random_seed(0)
    b, d, n, h, steps = args.decode_batch, args.d_model, args.heads, args.d_model // args.heads, args.steps
    s_max = prefix + steps
    tokens = tf.random.normal((b, s_max, d), dtype=tf.float32)       # the "embedded" sequence
    cached = CachedMultiHeadAttention(n, h)
    full = MultiHeadAttention(n, h)
    full(tokens[:, :8], tokens[:, :8])
    cached(tokens[:, :8], tokens[:, :8])
    cached.set_weights(full.get_weights())

    # Prefill: the prefix's keys and values go into slots 0 .. P-1 of a fixed-size cache.
    cache = tf.zeros((b, 2, s_max, n, h), dtype=tf.float32)
    prompt = tokens[:, :prefix]
    _, cache = cached(prompt, prompt, cache=cache, cache_update_index=0,
                      attention_mask=compute_causal_mask(b, s_max, prefix, 0))

    @tf.function
    def cached_step(token, cache, index):
        mask = compute_causal_mask(b, s_max, 1, index)
        return cached(token, token, cache=cache, cache_update_index=index, attention_mask=mask)

    @tf.function
    def recompute_step(seq):                         # (B, P + 1, D): the prefix and the new token
        return full(seq, seq, use_causal_mask=True)[:, -1:]

    # The same token at position P both ways: the outputs must agree.
    first = tokens[:, prefix:prefix + 1]
    out_cached, _ = cached_step(first, cache, tf.constant(prefix, tf.int32))
    out_full = recompute_step(tokens[:, :prefix + 1])
    error = float(tf.reduce_max(tf.abs(out_cached - out_full)))
    if not error < 1e-4:
        raise AssertionError(f"prefix {prefix}: cached and recomputed outputs differ by {error:g}")

    state = {"cache": cache, "i": 0}

    def run_cached():
        # A real decoding step: position P + i, the cache carried over; after `steps` steps
        # start again at P (the slots beyond P are then overwritten, as they would be).
        i = state["i"] % steps
        out, state["cache"] = cached_step(tokens[:, prefix + i:prefix + i + 1], state["cache"],
                                          tf.constant(prefix + i, tf.int32))
        state["i"] += 1
        _sync(out)

    seq = tokens[:, :prefix + 1]

    def run_recompute():
        _sync(recompute_step(seq))

    ratios, times = paired({"recompute": run_recompute, "cached": run_cached},
                           args.decode_rounds, args.warmup)
    cached_s, full_s = statistics.median(times["cached"]), statistics.median(times["recompute"])
    return {"P": prefix, "S_max": s_max, "speedup": statistics.median(ratios), "lo": min(ratios),
            "hi": max(ratios), "cached_ms": 1e3 * cached_s, "full_ms": 1e3 * full_s,
            "cached_tps": b / cached_s, "full_tps": b / full_s, "max_diff": error}


# ------------------------------------------------------------------ report

def machine() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    from bench_long import cpu_model   # benchmarks/ is on sys.path when a benchmark runs as a script

    model = cpu_model()
    threads = (f"TensorFlow threads: intra-op {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
               f"inter-op {tf.config.threading.get_inter_op_parallelism_threads() or 'default'}")
    return f"CPU {model}, {os.cpu_count()} logical cores ({threads})"


def load() -> tuple[str, float]:
    """The load averages as text, and the 1-minute one (NaN where unknown)."""
    try:
        averages = os.getloadavg()
    except OSError:
        return "unknown", float("nan")
    return " / ".join(f"{x:.2f}" for x in averages), averages[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["gqa2", "gqa1", "mha-window", "gqa2-window"],
                        help="gqa<Nkv> (e.g. gqa2, gqa1), mha-window, gqa2-window")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--modes", nargs="+", default=["eager", "function"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8, help="query heads Nq (and MHA's heads)")
    parser.add_argument("--window", type=int, default=128, help="sliding_window of the window configurations")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--prefixes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--decode-batch", type=int, default=1, help="sequences decoded together")
    parser.add_argument("--steps", type=int, default=32, help="decoding steps the cache has room for")
    parser.add_argument("--decode-rounds", type=int, default=21)
    parser.add_argument("--note", default="", help="a sentence about the machine, added to the results")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_modern_cpu.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    load_before, busy_before = load()

    rows = []
    for kind in args.configs:
        for t in args.lengths:
            for mode in args.modes:
                row = bench_vs_keras(kind, t, mode, args)
                rows.append(row)
                print(f"{row['config']:32} T={t:5d} {mode:8} ratio {row['ratio']:.3f} "
                      f"[{row['lo']:.2f}-{row['hi']:.2f}]  ours {row['ours_ms']:8.1f} ms  "
                      f"keras {row['keras_ms']:8.1f} ms", flush=True)
    decode = []
    for p in args.prefixes:
        row = bench_decoding(p, args)
        decode.append(row)
        print(f"prefix {p:5d}: cached {row['cached_ms']:7.2f} ms ({row['cached_tps']:8.1f} tok/s)  recompute "
              f"{row['full_ms']:8.2f} ms ({row['full_tps']:7.1f} tok/s)  speed-up {row['speedup']:.1f}x "
              f"[{row['lo']:.1f}-{row['hi']:.1f}]", flush=True)
    runtime = time.perf_counter() - start
    load_after, busy_after = load()
    busy = max(busy_before, busy_after) >= 0.75 * (os.cpu_count() or 1)

    ratios = [r["ratio"] for r in rows]
    command = "python benchmarks/bench_modern.py " + " ".join(sys.argv[1:] if argv is None else argv)
    over = [r for r in rows if r["ratio"] > 1.0]
    lines = [
        "# Today's attention layers: grouped queries, sliding windows, KV-cache decoding (CPU, float32)",
        "",
        f"Command: `{command.strip()}` ({runtime:.0f} s in all).  ",
        f"Device: {machine()}; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"Python {platform.python_version()}.  ",
        f"Load average (1 / 5 / 15 min): {load_before} at the start, {load_after} at the end"
        + (f" — **a loaded machine** ({os.cpu_count()} cores): other jobs shared the CPUs, so single "
           "timings are noisy (see the spreads). " if busy else ". ")
        + (args.note + " " if args.note else "")
        + "Only the paired ratios (both sides measured alternately in this one process) are meant "
          "to be compared; the absolute milliseconds are those of a loaded machine.",
        "",
        "## A. Ours vs Keras, same weights",
        "",
        f"Self-attention with `use_causal_mask=True`, batch {args.batch}, d_model {args.d_model}, "
        f"{args.heads} query heads of size {args.d_model // args.heads}; {args.rounds} interleaved rounds after "
        f"{args.warmup} warm-up calls. Ratio: median of the paired ratios ours ÷ Keras (below 1: ours "
        "faster); spread: the smallest and largest paired ratio. Both layers' outputs were checked to "
        f"agree (largest difference {max(r['max_diff'] for r in rows):.1e}).",
        "",
        f"**Median ratio (ours ÷ Keras) over all {len(rows)} configurations: {statistics.median(ratios):.3f}; "
        f"worst: {max(ratios):.3f}; best: {min(ratios):.3f}.**",
        "",
        "| configuration | T | mode | ratio | spread | ours ms | Keras ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {r['T']} | {r['mode']} | {r['ratio']:.3f} | {r['lo']:.2f}–{r['hi']:.2f} | "
                     f"{r['ours_ms']:.1f} | {r['keras_ms']:.1f} |")
    if over:
        lines += ["", f"Median ratio above 1.0 (ours slower) in {len(over)} of {len(rows)} rows: "
                      + ", ".join(f"{r['config']} T={r['T']} {r['mode']} ({r['ratio']:.3f})" for r in over)
                      + "."]
    lines += [
        "",
        "## B. KV-cache decoding vs recomputing the prefix",
        "",
        f"One new token after a prefix of P tokens, batch {args.decode_batch}, d_model {args.d_model}, "
        f"{args.heads} heads, same weights. Cached: `CachedMultiHeadAttention`, fixed-size cache "
        f"(B, 2, S_max, {args.heads}, {args.d_model // args.heads}) with S_max = P + {args.steps}, prefilled "
        "once; the step (`tf.function`, traced once) projects the new token, writes its key/value at "
        "`cache_update_index` (an int32 tensor) and attends over the cache under `compute_causal_mask`; "
        f"consecutive steps decode positions P, P+1, … P+{args.steps - 1} (then again from P). Recompute: "
        "`MultiHeadAttention` with `use_causal_mask=True` over all P + 1 tokens (`tf.function`), keeping the "
        f"last position. {args.decode_rounds} interleaved rounds after {args.warmup} warm-up steps; speed-up: "
        "median of the paired ratios recompute ÷ cached, spread min–max. The cached and recomputed outputs "
        f"for the token at position P agree (largest difference {max(r['max_diff'] for r in decode):.1e}).",
        "",
        "| prefix P | S_max | cached ms/token | recompute ms/token | cached tokens/s | recompute tokens/s | speed-up | spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in decode:
        lines.append(f"| {r['P']} | {r['S_max']} | {r['cached_ms']:.2f} | {r['full_ms']:.2f} | {r['cached_tps']:.0f} | "
                     f"{r['full_tps']:.1f} | **{r['speedup']:.1f}×** | {r['lo']:.1f}–{r['hi']:.1f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} ({runtime:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
