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
    """A function's return value as ``(arrays, is_tuple, type names)``, or raise TypeError.

    The type names (``"ndarray"``, ``"list"``, ``"float"``, ``"EagerTensor"``...) go back to the
    grader, which checks them against the promised types: ``np.asarray`` below would
    otherwise hide a list returned where an array is promised.
    """
    if isinstance(result, list) and any(np.ndim(part) != np.ndim(result[0]) or np.shape(part) != np.shape(result[0])
                                        for part in result):
        raise TypeError(f"returned a list of {len(result)} values of different shapes; return several values as "
                        f"a tuple (`return a, b`) and each one as an array")
    parts = list(result) if isinstance(result, tuple) else [result]
    outputs, types = [], []
    for part in parts:
        try:
            array = np.asarray(part)
        except Exception as exc:  # noqa: BLE001 - any odd object is reported, not raised
            raise TypeError(f"returned an object of type {type(part).__name__} that is not an array") from exc
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise TypeError(f"returned {type(part).__name__} with dtype {array.dtype}, not a numeric array")
        outputs.append(array)
        types.append(type(part).__name__)
    return outputs, isinstance(result, tuple), types


def _changed(before, after, path):
    """Paths (``x``, ``params['query_kernel']``) where ``after`` no longer equals ``before``."""
    if isinstance(before, np.ndarray):
        same = (isinstance(after, np.ndarray) and after.shape == before.shape
                and np.array_equal(before, after, equal_nan=before.dtype.kind in "fc"))
        return [] if same else [path]
    if isinstance(before, dict):
        if not isinstance(after, dict) or set(after) != set(before):
            return [path]
        return [p for key in before for p in _changed(before[key], after[key], f"{path}[{key!r}]")]
    if isinstance(before, (list, tuple)):
        if type(after) is not type(before) or len(after) != len(before):
            return [path]
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in _changed(b, a, f"{path}[{i}]")]
    return []


def _argument_names(fn, n_args):
    """The names of the first ``n_args`` parameters of ``fn`` (``argument 1``... when unknown)."""
    import inspect

    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"argument {i + 1}" for i in range(n_args)]


def _modified_inputs(fn, args, kwargs, call, arrays):
    """Which arguments the call changed in place, compared with fresh copies of what was sent."""
    sent_args, sent_kwargs = decode(call.get("args", []), arrays), decode(call.get("kwargs", {}), arrays)
    names = _argument_names(fn, len(args))
    changed = [p for name, b, a in zip(names, sent_args, args) for p in _changed(b, a, name)]
    return changed + [p for key in sent_kwargs for p in _changed(sent_kwargs[key], kwargs.get(key), key)]


def _same_outputs(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")
                                    for x, y in zip(a, b))


def _alarm(seconds):
    """Context-free per-call alarm; only possible in the main thread."""
    if seconds and threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM"):
        def on_alarm(signum, frame):
            raise CallTimeout(f"did not return within {seconds:g} s")
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        return previous
    return None


def _rearm(previous, seconds):
    """Give a second call its own full time limit (when the alarm is in use)."""
    if previous is not None:
        signal.setitimer(signal.ITIMER_REAL, seconds)


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
    "foreign"), ``error`` text, ``tuple`` and ``n`` (number of outputs); for a call that
    returned, also ``types`` (type name of each returned part) and ``result_type``, and, for a
    direct call, ``modified`` (arguments the call changed in place) and ``repeat`` ("same" when
    a second call on fresh copies of the inputs gave identical outputs, else "differs" or what
    it raised; skipped when the call says ``"repeat": False``). ``outputs[i]`` is the list of
    arrays returned (empty unless ok). A function that is not defined in the
    notebook itself (e.g. imported from a library) is reported as "foreign".
    """
    records, outputs = [], []
    for call in calls:
        name = call["function"]
        fn = namespace.get(name)
        record = {"status": "ok", "error": "", "tuple": False, "n": 0}
        result_arrays = []
        # A driver receives the object itself, which need not be callable (ex07's `model = None`
        # in an untouched notebook is for its driver to judge); a function must be.
        if name not in namespace or (not call.get("driver") and not callable(fn)):
            record.update(status="missing", error=f"`{name}` is not defined (did you run its cell?)")
        elif call.get("own_code", True) and getattr(fn, "__module__", "__main__") != "__main__":
            record.update(status="foreign",
                          error=f"`{name}` comes from `{fn.__module__}`, not from your own code")
        else:
            previous = _alarm(timeout)
            try:
                args = decode(call.get("args", []), arrays)
                kwargs = decode(call.get("kwargs", {}), arrays)
                driven = bool(call.get("driver"))
                if driven:
                    args = [fn] + list(args)
                    fn = (drivers or {})[call["driver"]]
                with np.errstate(all="ignore"):
                    value = fn(*args, **kwargs)
                result_arrays, is_tuple, types = _as_outputs(value)
                record.update(tuple=is_tuple, n=len(result_arrays), types=types, result_type=type(value).__name__)
                if not driven:  # a driver copies what it hands on, and checks what it needs itself
                    record["modified"] = _modified_inputs(fn, args, kwargs, call, arrays)
                    if call.get("repeat", True):
                        # The same inputs again (fresh copies): the answer must not change.
                        _rearm(previous, timeout)
                        try:
                            with np.errstate(all="ignore"):
                                again = _as_outputs(fn(*decode(call.get("args", []), arrays),
                                                       **decode(call.get("kwargs", {}), arrays)))[0]
                            record["repeat"] = "same" if _same_outputs(result_arrays, again) else "differs"
                        except CallTimeout:
                            raise
                        except Exception as exc:  # noqa: BLE001
                            record["repeat"] = f"raised {type(exc).__name__}: {exc}"[:200]
            except CallTimeout as exc:
                record.update(status="timeout", error=str(exc))
            except ForeignCode as exc:
                record.update(status="foreign", error=str(exc))
            except NotImplementedError:
                record.update(status="error", error="NotImplementedError: not implemented yet")
            except BaseException as exc:  # noqa: BLE001 - student code may raise anything
                if isinstance(exc, KeyboardInterrupt):
                    raise
                # The line in the student's code; a driver's own check (e.g. the return type) has no line
                # the student could find.
                frames = [f for f in traceback.extract_tb(exc.__traceback__)
                          if not f.filename.endswith(("drivers.py", "harvest.py")) and f.filename not in ("drivers", "harvest")]
                where = f" (line {frames[-1].lineno})" if frames else ""
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
