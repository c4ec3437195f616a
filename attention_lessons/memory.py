"""Peak memory of one call, measured in a fresh process; the attention workloads lesson 14 and
``benchmarks/bench_long.py`` measure.

Why a fresh process? Inside a long-lived process (a notebook kernel) the peak resident memory
says little about one call: it is a high-water mark that earlier cells have already raised,
and allocators keep freed memory for reuse instead of returning it to the system. TensorFlow's
own allocator statistics (``tf.config.experimental.get_memory_info``) would be exact, but CPU
builds offer them only with some kernels (oneDNN on: yes; ``TF_ENABLE_ONEDNN_OPTS=0``, as on
ARM machines: ``ValueError``). The resident memory of a fresh process works on every Linux
and macOS machine: the child does all its setup (imports, inputs, tracing), reads its
high-water mark, makes the one call, reads the mark again and reports the difference.

This module imports neither NumPy nor TensorFlow at import time; the workloads import
TensorFlow when called (in the child).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["allocation_workload", "attention_workload", "peak_rss_bytes", "peak_rss_in_fresh_process",
           "peak_rss_in_fresh_processes"]

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (``ru_maxrss``), in bytes.

    ``None`` where the operating system does not report it (Windows has no ``resource`` module).
    """
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else 1024 * int(peak)     # macOS: bytes; Linux, BSD: KiB


def _name_of(prepare) -> str:
    module, qualname = getattr(prepare, "__module__", None), getattr(prepare, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise ValueError(
            f"`prepare` must be a function a fresh process can import by name (defined at the top "
            f"level of a module, not in a notebook or inside another function); got {prepare!r}.")
    return f"{module}:{qualname}"


def _child(spec: dict) -> None:
    """The fresh process: prepare, read the high-water mark, run once, read it again."""
    import gc

    module, qualname = spec["prepare"].split(":")
    prepare = importlib.import_module(module)
    for part in qualname.split("."):
        prepare = getattr(prepare, part)
    run = prepare(*spec["args"], **spec["kwargs"])      # imports, inputs, tracing: all before the baseline
    gc.collect()
    before = peak_rss_bytes()
    run()
    after = peak_rss_bytes()
    print(json.dumps(None if before is None else after - before))


def peak_rss_in_fresh_process(prepare, /, *args, env: dict | None = None, timeout: float = 600, **kwargs) -> int | None:
    """Peak resident memory (bytes) that ONE call adds, measured in a fresh Python process.

    The child process (started through a small launcher process, so that it does not inherit
    this process's peak) imports ``prepare`` by its module and name and calls
    ``run = prepare(*args, **kwargs)``, which does all the setup (imports, inputs, tracing) and
    returns a function of no arguments. The child then reads its peak resident memory
    (``ru_maxrss``), calls ``run()`` once and reads it again; the difference is returned. It is
    the memory the call added above everything the setup had ever held: a lower bound on what
    the call allocated (memory the setup freed may be reused) and exact for large blocks, which
    come fresh from the system.

    Parameters
    ----------
    prepare : function
        Defined at the top level of an importable module (not in a notebook).
    *args, **kwargs
        Passed to ``prepare``; they travel as JSON (numbers, strings, lists, dicts, None).
    env : dict, optional
        The child's environment (default: this process's).
    timeout : float
        Seconds before the child is killed (``subprocess.TimeoutExpired``); so it is if this call
        is interrupted.

    Returns
    -------
    int or None
        Bytes; ``None`` where the operating system reports no peak resident memory (Windows).

    Raises
    ------
    RuntimeError
        The child failed; the message ends with its error output.
    """
    spec = {"prepare": _name_of(prepare), "args": list(args), "kwargs": kwargs}
    child_env = dict(os.environ if env is None else env)
    if Path(_PACKAGE_PARENT).name not in ("site-packages", "dist-packages"):
        # A source checkout: the child must import this very package (an installed one is found anyway,
        # and putting site-packages before the standard library could shadow it).
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, child_env.get("PYTHONPATH")) if p)
    child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # A small launcher process starts the measuring one: Linux carries a process's peak resident memory
    # across exec, so a child started directly by a large process (a notebook kernel holding TensorFlow)
    # would begin with its parent's peak, and the run would seem to add nothing. Via the launcher it
    # begins with the launcher's few MiB.
    command = [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "attention_lessons.memory", json.dumps(spec)]
    posix = os.name == "posix"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env,
                            start_new_session=posix)       # its own process group: launcher and child
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:                                   # a timeout, or the user interrupted: end both
        try:
            os.killpg(proc.pid, signal.SIGKILL) if posix else proc.kill()
        except ProcessLookupError:                          # both had ended already
            pass
        proc.communicate()
        raise
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the fresh process measuring {spec['prepare']} failed (exit {proc.returncode}):\n"
                           + stderr[-3000:])
    return json.loads(lines[-1])


def peak_rss_in_fresh_processes(prepare, configs, *, workers: int | None = None, **options) -> list[int | None]:
    """:func:`peak_rss_in_fresh_process` for each kwargs dict in ``configs``, a few processes at a time.

    Each measurement has its own process, so running them side by side changes no result
    (only the wall time); ``workers`` defaults to the number of CPU cores, at most 4.
    """
    configs = list(configs)
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda kw: peak_rss_in_fresh_process(prepare, **options, **kw), configs))


def attention_workload(impl: str, n: int, *, batch: int = 1, heads: int = 1, head_dim: int = 32,
                       chunk_size: int = 512, query_chunk_size: int | None = None, seed: int = 0):
    """Self-attention over ``n`` positions, float32, ready to run once.

    Creates the inputs, compiles the function with ``tf.function`` and traces it, then returns
    ``run()``, which computes the output and copies it to NumPy (waiting for the result).
    For :func:`peak_rss_in_fresh_process`; also used by ``benchmarks/bench_long.py``.

    impl : "naive", "chunked" or "layer"
        On ``(batch, heads, n, head_dim)`` queries, keys and values: ``softmax(Q Kᵀ/√d) V``,
        which materialises the ``(batch, heads, n, n)`` scores, or
        :func:`attention_lessons.layers.chunked_attention`, which holds one tile of scores
        (``query_chunk_size`` × ``chunk_size``, or n × ``chunk_size`` without query blocks).
        "layer": the course's :class:`attention_lessons.layers.MultiHeadAttention` with
        ``num_heads=heads, key_dim=head_dim`` on a ``(batch, n, heads * head_dim)`` input
        (projections included; its scores are ``(batch, heads, n, n)`` too).
    """
    if impl not in ("naive", "chunked", "layer"):
        raise ValueError(f"`impl` must be 'naive', 'chunked' or 'layer'; got {impl!r}.")
    import numpy as np

    from attention_lessons.device import import_tensorflow

    tf = import_tensorflow()
    from attention_lessons.layers import MultiHeadAttention, chunked_attention

    rng = np.random.default_rng(seed)
    if impl == "layer":
        width = heads * head_dim
        layer = MultiHeadAttention(num_heads=heads, key_dim=head_dim, seed=seed)
        layer.build((batch, None, width), (batch, None, width))

        @tf.function(input_signature=[tf.TensorSpec([batch, None, width], tf.float32)])
        def forward(x):
            return layer(x, x)                                               # scores (B, N, n, n) inside

        x = tf.constant(rng.normal(size=(batch, n, width)).astype(np.float32))
        forward.get_concrete_function()
        return _runner(forward, (x,))

    spec = tf.TensorSpec([batch, heads, None, head_dim], tf.float32)   # any length: one trace

    @tf.function(input_signature=[spec] * 3)
    def naive(q, k, v):
        scores = tf.matmul(q * (head_dim ** -0.5), k, transpose_b=True)      # (B, H, n, n)
        return tf.matmul(tf.nn.softmax(scores, axis=-1), v)

    @tf.function(input_signature=[spec] * 3)
    def chunked(q, k, v):
        return chunked_attention(q, k, v, chunk_size, query_chunk_size=query_chunk_size)

    fn = {"naive": naive, "chunked": chunked}[impl]
    q, k, v = (tf.constant(rng.normal(size=(batch, heads, n, head_dim)).astype(np.float32)) for _ in range(3))
    fn.get_concrete_function()                   # trace now, so that the graph exists before the baseline
    return _runner(fn, (q, k, v))


def allocation_workload(nbytes: int):
    """``run()`` allocates ``nbytes`` with NumPy and writes every page: a known amount, to check the measurement."""
    import numpy as np

    def run():
        block = np.ones(int(nbytes), np.uint8)       # np.ones writes every byte, so every page is resident
        return int(block[::4096].sum())

    return run


def _runner(fn, inputs):
    def run():
        return fn(*inputs).numpy()               # .numpy() waits for the result

    run.function, run.inputs = fn, inputs        # for callers that call it again (timing)
    return run


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
