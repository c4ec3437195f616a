"""Environment checks and reproducibility: ``doctor()`` and ``set_seed()``.

``doctor`` imports TensorFlow only to report on it; nothing else here does.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import random
import sys
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DoctorReport", "doctor", "in_colab", "import_tensorflow", "set_seed"]

SUPPORTED_PYTHON = ((3, 10), (3, 13))


@dataclass
class DoctorReport:
    """What :func:`doctor` found. ``problems`` holds actionable advice; empty means all is well."""

    python: str
    platform: str
    colab: bool
    versions: dict[str, str | None] = field(default_factory=dict)
    gpus: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # worth knowing, but nothing is wrong

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [
            f"Python        {self.python} ({self.platform})",
            f"Environment   {'Google Colab' if self.colab else 'local'}",
        ]
        for name, version in self.versions.items():
            lines.append(f"{name:<13} {version or 'not installed'}")
        lines.append(f"GPUs          {', '.join(self.gpus) if self.gpus else 'none (CPU only; every lesson runs on CPU)'}")
        lines += [f"• {n}" for n in self.notes]
        if self.problems:
            lines.append("")
            lines += [f"✗ {p}" for p in self.problems]
        else:
            lines.append("\n✓ Everything the course needs is in place.")
        return "\n".join(lines)


def in_colab() -> bool:
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what C++ libraries write to file descriptor 2 (TensorFlow's start-up logs).

    Those lines bypass Python's ``sys.stderr`` and arrive in a notebook at unpredictable
    moments, often under a later cell; Python-level errors are unaffected.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow without its C++ start-up chatter, list devices once, return the module.

    Lessons use this instead of ``import tensorflow as tf`` so their stored outputs stay
    clean and identical from run to run.
    """
    # 3 also hides C++ ERROR lines, which in a course are harmless noise (e.g. tf.data's
    # "NodeDef mentions attribute ... not in the op definition" during model.fit) that would
    # land under random cells; Python exceptions are unaffected.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, so do it while quiet
    return tf


def _version(module: str) -> str | None:
    try:
        if module == "tensorflow":
            return import_tensorflow().__version__
        return importlib.import_module(module).__version__
    except Exception:  # noqa: BLE001 - a broken install is reported, not raised
        return None


def _major_minor(version: str | None) -> tuple[int, int]:
    if not version:
        return (0, 0)
    parts = (version.split(".") + ["0"])[:2]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)  # type: ignore[return-value]


def doctor(verbose: bool = True) -> DoctorReport:
    """Check the environment for the course and print advice for anything that is off.

    Parameters
    ----------
    verbose : bool
        Print the report (it is returned either way).

    Returns
    -------
    DoctorReport
    """
    colab = in_colab()
    report = DoctorReport(python=platform.python_version(), platform=platform.platform(terse=True), colab=colab)
    import attention_lessons

    report.versions = {
        "attention_lessons": attention_lessons.__version__,
        "NumPy": np.__version__,
        "TensorFlow": _version("tensorflow"),
        "Keras": _version("keras"),
        "matplotlib": _version("matplotlib"),
        "ipywidgets": _version("ipywidgets"),
    }
    install = ("run the setup cell at the top of the notebook" if colab
               else "run `make lab` from the course folder (or `pip install \"attention-lessons[tensorflow]\"`)")
    low, high = SUPPORTED_PYTHON
    if not low <= sys.version_info[:2] <= high:
        report.problems.append(
            f"Python {report.python} is not supported; use Python {low[0]}.{low[1]}–{high[0]}.{high[1]}."
        )
    if _major_minor(np.__version__) < (2, 0):
        report.problems.append(f"NumPy {np.__version__} is too old; NumPy 2 is needed: {install}.")
    tf_version = report.versions["TensorFlow"]
    if tf_version is None:
        report.problems.append(f"TensorFlow is missing (needed from lesson 04 on): {install}.")
    elif _major_minor(tf_version) < (2, 16):
        report.problems.append(f"TensorFlow {tf_version} is older than 2.16 (Keras 3 is needed): {install}.")
    if _major_minor(report.versions["Keras"])[0] != 3:
        report.problems.append(f"Keras 3 is needed; found {report.versions['Keras'] or 'none'}: {install}.")
    for lib in ("matplotlib", "ipywidgets"):
        if report.versions[lib] is None:
            report.problems.append(f"{lib} is missing: {install}.")
    if tf_version is not None:
        tf = import_tensorflow()
        report.gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
        if colab and not report.gpus:
            report.notes.append(
                "No GPU in this Colab session (fine for every lesson; for lesson 10's GPU part "
                "choose Runtime → Change runtime type → GPU)."
            )
    if verbose:
        print(report)
    return report


def set_seed(seed: int = 0, tensorflow: bool | None = None) -> None:
    """Seed Python's ``random``, NumPy's global generator and, if wanted, TensorFlow/Keras.

    Parameters
    ----------
    seed : int
    tensorflow : bool or None
        Also seed Keras and TensorFlow (``keras.utils.set_random_seed``). ``None`` does so
        only when TensorFlow or Keras is already imported, so NumPy-only lessons stay fast.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative int; got {seed!r}.")
    random.seed(seed)
    np.random.seed(seed)
    if tensorflow is None:
        tensorflow = "tensorflow" in sys.modules or "keras" in sys.modules
    if tensorflow:
        import_tensorflow()
        import keras

        keras.utils.set_random_seed(int(seed))
