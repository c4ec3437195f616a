"""Call a student's functions on prepared inputs and record what comes back.

This module is deliberately standalone (standard library and NumPy only): the batch
grader sends its *source* into the student's kernel, so it works even where the course
package is blocked, and the in-notebook checks import it normally. Nothing here judges
the results; that happens in :mod:`attention_lessons.grading.spec`, in the grader's own
process for batch grading.

Payload format (JSON + one ``.npz``): ``{"calls": [{"function": name, "args": [...],
"kwargs": {...}}, ...]}`` where an array argument is ``{"__array__": key}`` into the npz.
"""

from __future__ import annotations

import json
import signal
import threading
import traceback

import numpy as np


class CallTimeout(Exception):
    """A student's function ran past its time limit."""


class ForeignCode(Exception):
    """A driver found that the student's object is (a thin wrapper of) a library's."""


def decode(value, arrays):
    """Turn a JSON-encoded argument back into Python/NumPy objects (always fresh copies)."""
    if isinstance(value, dict) and "__array__" in value:
        return np.array(arrays[value["__array__"]], copy=True)
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(decode(v, arrays) for v in value["__tuple__"])
    if isinstance(value, list):
        return [decode(v, arrays) for v in value]
    if isinstance(value, dict):
        return {k: decode(v, arrays) for k, v in value.items()}
    return value


def _as_outputs(result):
    """A function's return value as a list of numeric arrays, or raise TypeError."""
    parts = list(result) if isinstance(result, tuple) else [result]
    outputs = []
    for part in parts:
        try:
            array = np.asarray(part)
        except Exception as exc:  # noqa: BLE001 - any odd object is reported, not raised
            raise TypeError(f"returned an object of type {type(part).__name__} that is not an array") from exc
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(f"returned {type(part).__name__} with dtype {array.dtype}, not a numeric array")
        outputs.append(array)
    return outputs, isinstance(result, tuple)


def _alarm(seconds):
    """Context-free per-call alarm; only possible in the main thread."""
    if seconds and threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM"):
        def on_alarm(signum, frame):
            raise CallTimeout(f"did not return within {seconds:g} s")
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return previous
    return None


def _disarm(previous):
    if previous is not None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_calls(namespace, calls, arrays, timeout=10.0, drivers=None):
    """Run each call against ``namespace`` and return ``(records, outputs)``.

    A call may name a ``driver``: a trusted function from ``drivers`` that receives the
    student's object (e.g. a layer class) first and exercises it; otherwise the student's
    function is called directly.

    ``records[i]`` is a dict with ``status`` ("ok", "error", "missing", "timeout",
    "foreign"), ``error`` text, ``tuple`` and ``n`` (number of outputs); ``outputs[i]`` is the
    list of arrays returned (empty unless ok). A function that is not defined in the
    notebook itself (e.g. imported from a library) is reported as "foreign".
    """
    records, outputs = [], []
    for call in calls:
        name = call["function"]
        fn = namespace.get(name)
        record = {"status": "ok", "error": "", "tuple": False, "n": 0}
        result_arrays = []
        if not callable(fn):
            record.update(status="missing", error=f"`{name}` is not defined (did you run its cell?)")
        elif call.get("own_code", True) and getattr(fn, "__module__", "__main__") != "__main__":
            record.update(status="foreign",
                          error=f"`{name}` comes from `{fn.__module__}`, not from your own code")
        else:
            previous = _alarm(timeout)
            try:
                args = decode(call.get("args", []), arrays)
                kwargs = decode(call.get("kwargs", {}), arrays)
                if call.get("driver"):
                    args = [fn] + list(args)
                    fn = (drivers or {})[call["driver"]]
                with np.errstate(all="ignore"):
                    value = fn(*args, **kwargs)
                result_arrays, is_tuple = _as_outputs(value)
                record.update(tuple=is_tuple, n=len(result_arrays))
            except CallTimeout as exc:
                record.update(status="timeout", error=str(exc))
            except ForeignCode as exc:
                record.update(status="foreign", error=str(exc))
            except NotImplementedError:
                record.update(status="error", error="NotImplementedError: not implemented yet")
            except BaseException as exc:  # noqa: BLE001 - student code may raise anything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                last = traceback.extract_tb(exc.__traceback__)[-1:]
                where = f" (line {last[0].lineno})" if last else ""
                record.update(status="error", error=f"{type(exc).__name__}: {exc}{where}"[:500])
            finally:
                _disarm(previous)
        records.append(record)
        outputs.append(result_arrays)
    return records, outputs


def harvest_to_files(namespace, payload_json, payload_npz, out_json, out_npz, timeout=10.0, drivers=None):
    """Batch entry point (runs inside the student's kernel): files in, files out."""
    with open(payload_json) as f:
        calls = json.load(f)["calls"]
    with np.load(payload_npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    records, outputs = run_calls(namespace, calls, arrays, timeout, drivers)
    flat = {f"r{i}_{j}": a for i, arrays_i in enumerate(outputs) for j, a in enumerate(arrays_i)}
    np.savez(out_npz, **flat)
    with open(out_json, "w") as f:
        json.dump({"records": records}, f)
