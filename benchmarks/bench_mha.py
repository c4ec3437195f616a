"""Our MultiHeadAttention vs keras.layers.MultiHeadAttention, same weights, one process.

    python benchmarks/bench_mha.py                 # CPU table -> benchmarks/results_cpu.md
    python benchmarks/bench_mha.py --gpu --policy mixed_float16 ...   (see --help)

For every configuration (sequence length T, causal or not, eager / tf.function / XLA,
forward or forward+backward) both layers run in interleaved rounds (ours then Keras,
then Keras then ours, ...); the table reports the median of the paired ratios
ours ÷ Keras, the absolute medians, and the peak resident memory each needed. Ratios from
one process are what to compare: absolute times on shared 2-core machines vary by up to
~1.7× between runs.
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


def _rss_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def peak_memory_mib(fn) -> float:
    """Peak resident memory above the current level while ``fn`` runs (Linux; NaN elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set size
    except OSError:
        return float("nan")
    base = _rss_kib("VmRSS:")
    fn()
    return max(0, _rss_kib("VmHWM:") - base) / 1024


def child_peak_mib(t: int, causal: bool, backward: bool, which: str, args) -> float:
    """Peak memory of ONE eager call, measured in a fresh process so no allocator cache hides it."""
    import subprocess

    cmd = [sys.executable, __file__, "--child", which, str(t), str(int(causal)), str(int(backward)),
           "--batch", str(args.batch), "--d-model", str(args.d_model), "--heads", str(args.heads),
           "--policy", args.policy]
    done = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def _child(which: str, t: int, causal: bool, backward: bool, args) -> None:
    x = tf.random.normal((args.batch, t, args.d_model), dtype=tf.float32)
    cls = MultiHeadAttention if which == "ours" else keras.layers.MultiHeadAttention
    layer = cls(args.heads, args.d_model // args.heads)
    layer(x[:, :8], x[:, :8])  # build on a short input: the weights are all that stays
    if keras.config.dtype_policy().compute_dtype != "float32":
        x = tf.cast(x, keras.config.dtype_policy().compute_dtype)
    print(f"{peak_memory_mib(make_step(layer, x, causal, backward, 'eager')):.1f}")


def make_step(layer, x, causal: bool, backward: bool, mode: str):
    def forward():
        return layer(x, x, use_causal_mask=causal)

    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, x, use_causal_mask=causal), tf.float32))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    fn = forward_backward if backward else forward
    if mode == "function":
        fn = tf.function(fn)
    elif mode == "xla":
        fn = tf.function(fn, jit_compile=True)

    def run():
        out = fn()
        # Wait for the device: reading one value forces the computation to finish.
        first = out[0] if isinstance(out, (list, tuple)) else out
        _ = np.asarray(tf.reshape(first, [-1])[:1])
    return run


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench(t: int, causal: bool, mode: str, backward: bool, args) -> dict:
    keras.utils.set_random_seed(0)
    x = tf.random.normal((args.batch, t, args.d_model), dtype=tf.float32)
    theirs = keras.layers.MultiHeadAttention(args.heads, args.d_model // args.heads)
    ours = MultiHeadAttention(args.heads, args.d_model // args.heads)
    theirs(x, x)
    ours(x, x)
    ours.set_weights(theirs.get_weights())
    if keras.config.dtype_policy().compute_dtype != "float32":
        x = tf.cast(x, keras.config.dtype_policy().compute_dtype)
    runs = {"ours": make_step(ours, x, causal, backward, mode), "keras": make_step(theirs, x, causal, backward, mode)}
    for run in runs.values():          # compile / warm up
        for _ in range(args.warmup):
            run()
    times = {"ours": [], "keras": []}
    ratios = []
    for r in range(args.rounds):
        order = ("ours", "keras") if r % 2 == 0 else ("keras", "ours")
        got = {name: timed(runs[name]) for name in order}
        for name in got:
            times[name].append(got[name])
        ratios.append(got["ours"] / got["keras"])
    memory = {name: child_peak_mib(t, causal, backward, name, args) for name in runs}
    flops = attention_flops(args.batch, t, args.d_model, backward)
    return {"T": t, "causal": causal, "mode": mode, "pass": "fwd+bwd" if backward else "fwd",
            "ratio": statistics.median(ratios), "ours_ms": 1e3 * statistics.median(times["ours"]),
            "keras_ms": 1e3 * statistics.median(times["keras"]), "ours_mib": memory["ours"],
            "keras_mib": memory["keras"], "tflops_ours": flops / statistics.median(times["ours"]) / 1e12,
            "tflops_keras": flops / statistics.median(times["keras"]) / 1e12}


def attention_flops(b: int, t: int, d: int, backward: bool) -> float:
    """Multiply-adds ×2 of one self-attention call: 4 projections + QKᵀ + weights·V."""
    forward = 2 * b * (4 * t * d * d + 2 * t * t * d)
    return forward * (3 if backward else 1)  # backward ≈ twice the forward


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--modes", nargs="+", default=["eager", "function", "xla"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--policy", default="float32", help="float32, mixed_float16 or mixed_bfloat16")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, to report utilisation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_cpu.md")
    parser.add_argument("--child", nargs=4, metavar=("LAYER", "T", "CAUSAL", "BACKWARD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keras.config.set_dtype_policy(args.policy)
    if args.child:
        which, t, causal, backward = args.child
        _child(which, int(t), bool(int(causal)), bool(int(backward)), args)
        return 0
    gpus = tf.config.list_physical_devices("GPU")
    device = (tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus
              else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})")
    rows = []
    for t in args.lengths:
        for causal in (False, True):
            for mode in args.modes:
                for backward in (False, True):
                    row = bench(t, causal, mode, backward, args)
                    rows.append(row)
                    print(f"T={t:5d} causal={causal!s:5} {mode:8} {row['pass']:7} ratio {row['ratio']:.3f}  "
                          f"ours {row['ours_ms']:9.1f} ms  keras {row['keras_ms']:9.1f} ms", flush=True)
    ratios = [r["ratio"] for r in rows]
    command = "python benchmarks/bench_mha.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"# MultiHeadAttention benchmark: ours vs keras.layers.MultiHeadAttention ({args.policy})",
        "",
        f"Command: `{command.strip()}`  ",
        f"Device: {device}; TensorFlow {tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}.  ",
        f"Batch {args.batch}, d_model {args.d_model}, {args.heads} heads; {args.rounds} interleaved rounds after "
        f"{args.warmup} warm-up calls; same weights in both layers. Peak MiB: resident memory added by one eager "
        "call of that configuration, measured in a fresh process (the same for every mode).",
        "",
        f"**Median ratio (ours ÷ Keras) over all {len(rows)} configurations: {statistics.median(ratios):.3f}; "
        f"worst: {max(ratios):.3f}; best: {min(ratios):.3f}.** Below 1 means ours is faster.",
        "",
        "| T | causal | mode | pass | ratio | ours ms | Keras ms | ours peak MiB | Keras peak MiB | TFLOP/s ours | TFLOP/s Keras |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['T']} | {'yes' if r['causal'] else 'no'} | {r['mode']} | {r['pass']} | {r['ratio']:.3f} | "
                     f"{r['ours_ms']:.1f} | {r['keras_ms']:.1f} | {r['ours_mib']:.0f} | {r['keras_mib']:.0f} | "
                     f"{r['tflops_ours']:.3f} | {r['tflops_keras']:.3f} |")
    if args.peak_tflops:
        best = max(r["tflops_ours"] for r in rows)
        lines += ["", f"Best achieved: {best:.1f} TFLOP/s = {100 * best / args.peak_tflops:.0f} % of the "
                      f"{args.peak_tflops:g} TFLOP/s peak."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
