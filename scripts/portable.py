"""Run a command in the numeric environment of the portability run: ``python scripts/portable.py CMD...``.

Students run the course on CPUs unlike ours (Intel and AMD with and without AVX-512, Apple
silicon, Colab's Xeons) with 1 to 16 threads. The stored outputs of the notebooks were made on
one machine with TensorFlow's default kernels (oneDNN, here with AVX-512). The portability run
executes every lesson and solution again, strict nbval, with:

* ``TF_ENABLE_ONEDNN_OPTS=0`` — TensorFlow's own (Eigen) kernels instead of oneDNN's, as on
  Apple silicon and other ARM machines: other kernels, other float32 rounding. This is the
  variation that reproduced what a second machine (AMD, AVX2) found: outputs 2–5e-7 away
  from ours, where the suite had claimed bit-for-bit equality;
* ``ONEDNN_MAX_CPU_ISA=AVX2`` and ``XLA_FLAGS=--xla_cpu_max_isa=AVX2`` — whatever still uses
  oneDNN, and XLA's generated code, limited to AVX2 (no AVX-512), as on most laptops.
  The oneDNN cap is not used alone: with oneDNN's rewrites on, TensorFlow 2.21 still
  picks its float16 matrix products from the CPU's own flags (AVX512-FP16 here) and
  crashes with a segmentation fault when oneDNN is capped below them — a fault of the
  emulation that a real AVX2 machine, which lacks the flags, does not have;
* one thread for TensorFlow (intra- and inter-op), OpenMP and every BLAS — other
  reduction orders than a multi-threaded run.

Used by ``scripts/colab_stack.py`` (the Colab-like stack runs its nbval and unit tests in this
environment) and by hand: ``.venv/bin/python scripts/portable.py .venv/bin/python -m pytest notebooks``.
"""

from __future__ import annotations

import os
import sys

#: The variables of the portability run (see the module docstring for why each).
PORTABLE_ENV = {
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}


def portable_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the portability variables set."""
    env = dict(os.environ if base is None else base)
    env.update(PORTABLE_ENV)
    return env


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    os.execvpe(sys.argv[1], sys.argv[1:], portable_env())
