"""Trusted code that exercises a student's *object* (not a plain function) on given inputs.

Like :mod:`harvest`, this file is standalone: the batch grader executes its source inside
the student's kernel, next to the harvest code. A driver receives the student's object
first (e.g. their layer class) and returns plain NumPy arrays; the grader calls the same
driver with the reference object (e.g. ``keras.layers.MultiHeadAttention``) in its own
process and compares the two.
"""

import numpy as np

try:
    from .harvest import ForeignCode
except ImportError:  # shipped into a kernel: harvest's source was executed in this namespace
    pass


def _keras():
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        # TensorFlow's C++ start-up logs go to fd 2; keep them out of the notebook.
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    import keras

    return keras


def _refuse_keras_subclass(cls, keras):
    if isinstance(cls, type) and cls is not keras.layers.MultiHeadAttention \
            and issubclass(cls, keras.layers.MultiHeadAttention):
        raise ForeignCode("it subclasses keras.layers.MultiHeadAttention instead of implementing the layer")


def mha_forward(cls, config, query, value, key=None, weights=None, attention_mask=None, use_causal_mask=False,
                training=False):
    """Build ``cls(**config)``, load ``weights`` (Keras order), return (output, scores) as float32 arrays."""
    keras = _keras()
    _refuse_keras_subclass(cls, keras)
    policy = config.get("dtype")
    try:
        layer = cls(**config)
        kwargs = {} if key is None else {"key": key}
        layer(query, value, **kwargs)  # build
        if weights is not None:
            layer.set_weights([np.asarray(w) for w in weights])

        def forward():
            result = layer(query, value, attention_mask=attention_mask, use_causal_mask=use_causal_mask,
                           return_attention_scores=True, training=training, **kwargs)
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                got = f"{type(result).__name__} of {len(result)}" if isinstance(result, (tuple, list)) \
                    else f"one {type(result).__name__}"
                raise TypeError(f"with return_attention_scores=True, call() must return (output, scores); "
                                f"it returned {got}")
            for part in result:
                if not keras.ops.is_tensor(part):
                    raise TypeError(f"call() must return tensors (results of keras.ops); it returned a "
                                    f"{type(part).__name__}")
            return [np.asarray(part, dtype=np.float32) for part in result]

        out, scores = forward()
        # Same inputs, training=False: the same answer (no dropout or state left switched on).
        again = forward()
        if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip((out, scores), again)):
            raise RuntimeError("called twice on the same inputs (training=False), the layer returned different "
                               "outputs: dropout must run only when training, and call() must keep no state")
    finally:
        if policy:
            keras.config.set_dtype_policy("float32")
    return out, scores


def mha_initial_kernels_distinct(cls, config, query, seed=0):
    """1.0 when a freshly built layer's query, key and value kernels all differ, else 0.0."""
    keras = _keras()
    _refuse_keras_subclass(cls, keras)
    keras.utils.set_random_seed(int(seed))
    layer = cls(**config)
    layer(query, query)
    kernels = [np.asarray(w) for w in layer.get_weights() if np.ndim(w) == 3][:3]
    if len(kernels) < 3:
        return np.array(0.0)
    q, k, v = kernels
    distinct = not (np.array_equal(q, k) or np.array_equal(q, v) or (k.shape == v.shape and np.array_equal(k, v)))
    return np.array(1.0 if distinct else 0.0)


def online_memory(fn, q, k, v, chunk_size, budget_mib=16, **kwargs):
    """Call ``fn(q, k, v, chunk_size, **kwargs)`` under ``tracemalloc``; return (over budget, output).

    The first value is 1.0 when the call's peak of newly allocated memory (NumPy arrays
    included) passed ``budget_mib`` MiB, else 0.0: a coarse flag, so that two implementations
    that both stay within the budget (or both pass it) give the same result. It comes first
    so that the feedback names it when it differs.
    """
    import tracemalloc

    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        out = fn(q, k, v, chunk_size, **kwargs)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        if not was_tracing:
            tracemalloc.stop()
    if isinstance(out, tuple):
        raise TypeError(f"the function returned a tuple of {len(out)} values; return the output array only")
    return np.array(float(peak > budget_mib * 2**20)), np.asarray(out)


def keras_model_file(model, max_megabytes=64):
    """The bytes of ``model`` saved as a ``.keras`` file (a uint8 array), for the grader to load."""
    import os
    import tempfile

    if model is None:
        # The untouched notebook leaves `model = None` (its build_model still raises
        # NotImplementedError, which the cell catches): not attempted, rather than a wrong type.
        raise NotImplementedError("`model` is None: build_model and train still raise NotImplementedError")
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a trained keras.Model; got {type(model).__name__}")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        size = os.path.getsize(path)
        if size > max_megabytes * 2**20:
            raise ValueError(f"the saved model takes {size / 2**20:.0f} MB; the limit is {max_megabytes} MB")
        with open(path, "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint8)


def decoding_work(fn, params, prompt, n_new):
    """Call ``fn(params, prompt, n_new)`` counting the token rows it projects; return (recomputed, tokens).

    Rows are counted through ``project``, the decoder function the notebook gives (looked up
    where ``fn`` looks it up: its module's globals), since keys and values of a token come
    from projecting it. With a cache every token is projected once, P + n_new rows in all;
    recomputing the sequence at every step projects about n_new·P + n_new²/2. The first value
    is 1.0 when more than twice P + n_new rows were projected (room for projecting the prompt
    twice), else 0.0: a coarse flag, the same for every implementation that keeps a cache.
    """
    namespace = getattr(fn, "__globals__", None)
    if not isinstance(namespace, dict) or not callable(namespace.get("project")):
        raise NameError("`project` is not defined: run the cell that gives the decoder (before question 3)")
    original, rows = namespace["project"], [0]

    def counting_project(params, x, positions):
        rows[0] += int(np.shape(x)[1])
        return original(params, x, positions)

    namespace["project"] = counting_project
    try:
        result = fn(params, prompt, n_new)
    finally:
        namespace["project"] = original
    if not (isinstance(result, tuple) and len(result) == 3):
        raise TypeError("generate must return (tokens, logits, cache)")
    return np.array(float(rows[0] > 2 * (np.shape(prompt)[1] + n_new))), np.asarray(result[0])


DRIVERS = {"mha_forward": mha_forward, "mha_initial_kernels_distinct": mha_initial_kernels_distinct,
           "online_memory": online_memory, "keras_model_file": keras_model_file, "decoding_work": decoding_work}
