"""Exercise 08 · Online-softmax attention: online_softmax_attention(q, k, v, chunk_size, causal=False).

The student scans the keys and values in chunks, keeping per query a running maximum
``m``, a running sum ``l`` of ``exp(score - m)`` and a running accumulator of
``exp(score - m) * value`` (rescaled by ``exp(m_old - m_new)`` whenever the maximum grows),
and never builds the full ``(T, S)`` score matrix. The reference is the package's naive
:func:`~attention_lessons.attention.scaled_dot_product_attention` (with
:func:`~attention_lessons.attention.causal_mask` for ``causal=True``); question 3 runs the
student's function under ``tracemalloc`` through :func:`drivers.online_memory`.

The bugs are one small chunked implementation with one classic mistake switched on.
"""

from __future__ import annotations

import numpy as np

from ..attention import causal_mask as _causal
from ..attention import scaled_dot_product_attention as _sdpa
from .drivers import online_memory
from .spec import Bug, Case, Check, Exercise, Question

#: Question 3: the peak memory a chunked implementation may allocate at T = S = 2048, d = 16,
#: chunk_size = 128, float64: half of one (T, S) float64 matrix (32 MiB), room for eight
#: (T, chunk_size) blocks of 2 MiB. A plain chunked loop peaks near 8.5 MiB (the previous
#: chunk's exp(s - m) is still alive while the next one is computed); naive attention near 96 MiB.
BUDGET_MIB = 16


def _ref(q, k, v, chunk_size, causal=False):
    mask = _causal(np.shape(q)[-2], np.shape(k)[-2]) if causal else None
    return _sdpa(q, k, v, mask)[0]


def _memory_reference(q, k, v, chunk_size, budget_mib=BUDGET_MIB):
    """What :func:`drivers.online_memory` returns for a right answer: 0 (within budget) and the output."""
    return np.array(0.0), _ref(q, k, v, chunk_size)


# --------------------------------------------------------------------------------------
# Bugs: a student-style chunked implementation with one mistake switched on
# --------------------------------------------------------------------------------------

def _online(bug=None):
    """A chunked online-softmax attention with the mistake ``bug`` (None: no mistake)."""
    def fn(q, k, v, chunk_size, causal=False):
        q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
        t, s_len = q.shape[-2], k.shape[-2]
        scale = 1.0 if bug == "unscaled" else 1.0 / np.sqrt(q.shape[-1])
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        m = np.full(lead + (t, 1), -np.inf)
        l = np.zeros(lead + (t, 1))
        acc = np.zeros(lead + (t, v.shape[-1]))
        outputs = []                                       # per_chunk: each chunk's own softmax average
        rows = np.arange(t)[:, None]
        stop_at = {"skip_partial": s_len - s_len % chunk_size, "stop_early": s_len - chunk_size}.get(bug, s_len)
        for start in range(0, stop_at, chunk_size):
            stop = min(start + chunk_size + (1 if bug == "overlap" else 0), s_len)
            scores = q @ np.swapaxes(k[..., start:stop, :], -1, -2) * scale            # (..., T, c)
            if causal:
                cols = np.arange(start, stop)[None, :]
                keep = {"no_diagonal": cols < rows, "no_diagonal_guarded": cols < rows,
                        "local": cols - start <= rows, "bottom_right": cols <= rows + (s_len - t),
                        "ignore_causal": np.ones_like(cols <= rows)}.get(bug, cols <= rows)
                scores = np.where(keep, scores, -np.inf)
            if bug == "per_chunk":
                p = np.exp(scores - scores.max(axis=-1, keepdims=True))
                outputs.append(p @ v[..., start:stop, :] / p.sum(axis=-1, keepdims=True))
                continue
            if bug == "max_stays_init":
                m_new = m
            elif bug == "no_max":
                m_new = np.zeros_like(m)
            elif bug == "max_frozen":
                m_new = scores.max(axis=-1, keepdims=True) if start == 0 else m
            elif bug == "shared_max":   # one running max for every query (and batch entry)
                m_new = np.maximum(m, scores.max())
            else:
                m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))
            if bug == "no_diagonal_guarded":
                m_new = np.where(np.isfinite(m_new), m_new, 0.0)
                alpha = np.where(np.isfinite(m), np.exp(m - m_new), 0.0)
            else:
                alpha = np.exp(m - m_new)
            if bug == "inverted_rescale":
                alpha = np.exp(np.where(np.isfinite(m), m_new - m, -np.inf))
            p = np.exp(scores - m_new)
            l_alpha = 1.0 if bug in ("no_rescale_sum", "no_rescale") else alpha
            acc_alpha = 1.0 if bug in ("no_rescale_acc", "no_rescale") else alpha
            l = l * l_alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * acc_alpha + p @ v[..., start:stop, :]
            if bug != "max_not_kept":
                m = m_new
        if bug == "per_chunk":
            return np.mean(outputs, axis=0)
        if bug == "no_diagonal_guarded":
            return np.divide(acc, l, out=np.zeros_like(acc), where=l > 0)
        return acc / l
    fn.__name__ = f"online_{bug}" if bug else "online"
    return fn


def _naive(q, k, v, chunk_size, causal=False):
    """Right answer, wrong memory: the whole (T, S) score matrix at once."""
    q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        scores = np.where(np.arange(k.shape[-2])[None, :] <= np.arange(q.shape[-2])[:, None], scores, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True) @ v


def _naive_under_driver(*args, **kwargs):
    return online_memory(_naive, *args, **kwargs)


_naive_under_driver.target = lambda: _naive  # the buggy function itself, for tests


RESCALE_SUM = ("When the running max grows, the running sum must shrink too: l = l * exp(m_old - m_new) + "
               "sum(exp(s - m_new)). You rescale the accumulator but not the sum.")
RESCALE_ACC = ("When the running max grows, the accumulator must shrink too: acc = acc * exp(m_old - m_new) + "
               "exp(s - m_new) @ v_chunk. You rescale the sum but not the accumulator.")
RESCALE_BOTH = ("Nothing is rescaled when the running max grows: the old terms were exp(s - m_old), the new ones "
                "exp(s - m_new). Multiply both l and acc by exp(m_old - m_new) before adding the new chunk.")
RESCALE_SIGN = "The rescaling factor is upside down: multiply l and acc by exp(m_old - m_new) (≤ 1), not exp(m_new - m_old)."
PER_CHUNK = ("You normalise each chunk on its own and average the chunks' outputs; a chunk's softmax ignores the "
             "other chunks. Keep unnormalised running sums (l and acc) and divide acc / l once, after the last chunk.")
UNSCALED = "The scores are not scaled: divide q kᵀ by √d (d = q.shape[-1]) in every chunk."
STOP_EARLY = ("The last chunk is skipped: `range(0, S - chunk_size, chunk_size)` stops one chunk early (and runs no "
              "chunk at all when chunk_size ≥ S); so does `range(0, S - S % chunk_size, chunk_size)` when chunk_size "
              "does not divide S. Use `range(0, S, chunk_size)`.")
SKIP_PARTIAL = ("The last, shorter chunk is skipped when chunk_size does not divide S. Use `range(0, S, chunk_size)` "
                "and slice `k[..., start:start + chunk_size, :]` (a slice past the end just stops at S).")
OVERLAP = ("Your chunks overlap: a key on a chunk boundary is counted twice. Chunk i covers keys "
           "start … start + chunk_size - 1, i.e. the slice [start:start + chunk_size].")
MAX_STAYS = ("Your output is NaN everywhere. Usual causes: the running max m is never updated from -inf, so "
             "exp(s - m) = inf; or the rescaling factor is upside down, exp(m_new - m_old), which is inf · 0 = NaN on "
             "the first chunk. Use m_new = max(m, chunk max), the factor exp(m_old - m_new), then m = m_new.")
MAX_NOT_KEPT = ("Only the last chunk counts: m is never set to m_new, so it stays -inf and exp(m - m_new) = 0 wipes "
                "l and acc at every chunk. After the updates, keep the new max: m = m_new.")
NO_MAX = ("Large scores overflow (or all underflow to 0): you exponentiate the raw scores. Subtract the running max: "
          "exp(s - m_new) with m_new = max(m, max of the chunk's scores).")
SHARED_MAX = ("One running maximum is shared by all queries: a query whose scores lie far below another query's "
              "gets exp(s - m) = 0 for every key, and 0/0 = NaN. Keep one maximum per query, m of shape (..., T, 1): "
              "m_new = np.maximum(m, s.max(axis=-1, keepdims=True)).")
MAX_FROZEN = ("The running max is never updated after the first chunk, so a later chunk with much larger scores "
              "overflows exp(). Update m_new = max(m, chunk max) for every chunk and rescale l and acc.")
NO_DIAGONAL = ("The diagonal is excluded: query i may attend to key j when j <= i (itself included), so the first "
               "query has one key to look at, not none.")
LOCAL = ("The causal mask uses the position inside the chunk (0 … chunk_size - 1) instead of the key's position in "
         "the sequence: compare the GLOBAL index start + j with the query index i.")
IGNORED = "causal=True is ignored: mask the scores of keys j > i with -inf before the exponential."
BOTTOM_RIGHT = ("Your causal triangle is aligned at the bottom-right corner; here (like causal_mask and Keras's "
                "use_causal_mask) it is top-left: query i sees keys j <= i, whatever T and S.")
FULL_MATRIX = ("Right answer, but you built the full (T, S) score matrix: its memory grows as T·S. Compute the "
               "scores of one chunk of keys at a time, q @ k[..., start:start + chunk_size, :]ᵀ, and keep only "
               "m, l and acc between chunks.")

#: The catalogue, in the order the checks try it: the first bug that explains every case of
#: a failing check gives the hint. (Where two bugs give the same outputs on a check's cases,
#: only the first is listed there: e.g. skipping the partial chunk and `range(0, S - chunk_size,
#: chunk_size)` differ only when chunk_size divides S or is at least S.)
CATALOGUE = {
    "max_stays_init": MAX_STAYS, "max_not_kept": MAX_NOT_KEPT, "no_rescale_sum": RESCALE_SUM, "no_rescale_acc": RESCALE_ACC,
    "no_rescale": RESCALE_BOTH, "inverted_rescale": RESCALE_SIGN, "per_chunk": PER_CHUNK, "unscaled": UNSCALED,
    "stop_early": STOP_EARLY, "skip_partial": SKIP_PARTIAL, "overlap": OVERLAP, "no_max": NO_MAX,
    "max_frozen": MAX_FROZEN, "shared_max": SHARED_MAX, "ignore_causal": IGNORED, "no_diagonal": NO_DIAGONAL, "no_diagonal_guarded": NO_DIAGONAL,
    "local": LOCAL, "bottom_right": BOTTOM_RIGHT,
}
_BUGS = {name: Bug(hint, _online(name)) for name, hint in CATALOGUE.items()}


def _bugs(*names):
    """The named bugs, in catalogue order."""
    unknown = set(names) - set(CATALOGUE)
    if unknown:
        raise KeyError(f"not in the catalogue: {sorted(unknown)}")
    return [_BUGS[n] for n in CATALOGUE if n in names]


ALGORITHM = ("max_stays_init", "max_not_kept", "no_rescale_sum", "no_rescale_acc", "no_rescale", "inverted_rescale", "per_chunk",
             "unscaled")
CHUNKS = ("stop_early", "skip_partial", "overlap")
CAUSAL = ("ignore_causal", "no_diagonal", "no_diagonal_guarded", "local")


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------

def _qkv(rng, t, s, d, dv, lead=(), scale=1.5, dtype=float):
    return tuple((rng.normal(size=lead + shape) * scale).astype(dtype) for shape in ((t, d), (s, d), (s, dv)))


def _divides(rng):
    return [Case(_qkv(rng, 3, 8, 4, 2) + (4,), label="q (3, 4), k (8, 4), v (8, 2), chunk_size=4"),
            Case(_qkv(rng, 6, 6, 8, 3) + (2,), label="q (6, 8), k (6, 8), v (6, 3), chunk_size=2")]


def _chunk_sizes(rng):
    q, k, v = _qkv(rng, 4, 7, 4, 3)
    return [Case((q, k, v, c), label=f"S = 7 keys, chunk_size={c}") for c in (3, 1, 7, 10)]


def _batched(rng):
    return [Case(_qkv(rng, 5, 7, 4, 3, lead=(2, 3), dtype=np.float32) + (3,),
                 label="float32 heads: q (2, 3, 5, 4), k (2, 3, 7, 4), v (2, 3, 7, 3), chunk_size=3")]


def _ramp(rng, t, s, slope, dtype):
    """Integer-valued q, k (exact scores in float32 and float64) whose scores grow along the keys
    by about ``slope`` per key; d = 4, so √d = 2 is exact too."""
    q = rng.integers(-3, 4, size=(t, 4)).astype(float)
    q[:, 0] = 20.0
    k = rng.integers(-3, 4, size=(s, 4)).astype(float)
    k[:, 0] = np.round(np.linspace(-1.0, 1.0, s) * slope * (s - 1) / 20.0)
    v = rng.normal(size=(s, 3))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def _apart(rng, t, s, dtype=float):
    """Integer-valued q, k (exact scores) where query i's scores lie near (-1)^i · 1000: queries whose
    scores differ by about 2000 within one call, so one maximum shared by all queries underflows."""
    q = rng.integers(-3, 4, size=(t, 4)).astype(float)
    q[:, 0] = np.where(np.arange(t) % 2 == 0, 40.0, -40.0)
    k = rng.integers(-3, 4, size=(s, 4)).astype(float)
    k[:, 0] = 50.0 + rng.integers(-3, 4, size=s)
    return q.astype(dtype), k.astype(dtype), rng.normal(size=(s, 3)).astype(dtype)


def _large(rng):
    qa, ka, va = _ramp(rng, 3, 9, 200.0, float)             # scores from about -800 to +800
    qb, kb, vb = _ramp(rng, 3, 9, 40.0, float)
    kb[:, 0] -= 100.0                                        # all scores near -1000: exp underflows to 0
    qc, kc, vc = _ramp(rng, 3, 9, 40.0, np.float32)         # float32: about -160 … +160
    return [Case((qa, ka, va, 3), label="float64 scores rising from about -800 to +800, chunk_size=3"),
            Case((qb, kb, vb, 4), label="float64 scores all near -1000, chunk_size=4"),
            Case((qc, kc, vc, 2), label="float32 scores rising from about -160 to +160, chunk_size=2"),
            Case(_apart(rng, 4, 9) + (3,), label="4 queries whose scores lie near +1000 and -1000 in turn, chunk_size=3")]


def _causal_square(rng):
    q, k, v = _qkv(rng, 6, 6, 4, 2)
    return [Case((q, k, v, c), {"causal": True}, label=f"causal, T = S = 6, chunk_size={c}") for c in (2, 4, 1, 8)]


def _rising(q, k, v):
    """Scores that tend to grow along the keys, so the running max grows from chunk to chunk."""
    q[..., 0], k[..., 0] = 3.0, np.linspace(-3.0, 3.0, k.shape[-2])
    return q, k, v


def _causal_rect(rng):
    return [Case(_rising(*_qkv(rng, 4, 7, 4, 2)) + (2,), {"causal": True},
                 label="causal, T = 4 queries, S = 7 keys, chunk_size=2"),
            Case(_rising(*_qkv(rng, 7, 3, 4, 2)) + (2,), {"causal": True},
                 label="causal, T = 7 queries, S = 3 keys, chunk_size=2")]


def _causal_more(rng):
    q, k, v = _ramp(rng, 9, 9, 200.0, float)
    return [Case(_qkv(rng, 5, 5, 4, 3, lead=(2, 2), dtype=np.float32) + (2,), {"causal": True},
                 label="causal float32 heads: q, k (2, 2, 5, 4), chunk_size=2"),
            Case((q, k, v, 3), {"causal": True}, label="causal, float64 scores rising from about -800 to +800"),
            Case(_apart(rng, 6, 6) + (2,), {"causal": True},
                 label="causal, 6 queries whose scores lie near +1000 and -1000 in turn, chunk_size=2")]


def _memory(rng):
    q, k, v = _qkv(rng, 2048, 2048, 16, 16, scale=1.0)
    return [Case((q, k, v, 128), {"budget_mib": BUDGET_MIB},
                 label=f"T = S = 2048, d = 16, chunk_size=128 (output 0 is 1 when the peak memory passes "
                       f"{BUDGET_MIB} MiB, 0 when it stays below; output 1 is the attention output)")]


# --------------------------------------------------------------------------------------
# Questions
# --------------------------------------------------------------------------------------

GENERIC = ("Per chunk: s = q @ k_chunkᵀ / √d; m_new = max(m, s.max(-1)); l = l·exp(m - m_new) + exp(s - m_new).sum(-1); "
           "acc = acc·exp(m - m_new) + exp(s - m_new) @ v_chunk; m = m_new. Return acc / l.")

online_q = Question(
    "ex08.q1", "online_softmax_attention", "online_softmax_attention(q, k, v, chunk_size)", _ref, [
        Check("equals softmax(q kᵀ / √d) v when chunk_size divides S", 1.5, _divides, rtol=1e-5, atol=1e-5,
              hint=GENERIC,
              bugs=_bugs(*ALGORITHM, "stop_early", "overlap")),
        Check("chunk sizes that do not divide S, chunk_size=1 and chunk_size ≥ S", 1.0, _chunk_sizes,
              rtol=1e-5, atol=1e-5,
              hint="Loop `for start in range(0, S, chunk_size)` and slice `[start:start + chunk_size]`: the last "
                   "chunk may be shorter, and one chunk may hold every key.",
              bugs=_bugs(*ALGORITHM, *CHUNKS)),
        Check("leading batch and head dimensions, float32 inputs", 0.5, _batched, rtol=1e-5, atol=1e-5,
              hint="Index the key axis as k[..., start:stop, :], transpose with np.swapaxes(k_chunk, -1, -2) and "
                   "reduce with axis=-1, keepdims=True, so any leading dimensions pass through.",
              bugs=_bugs(*ALGORITHM, "stop_early", "overlap")),
        Check("large scores (up to ±1000 in float64, ±160 in float32): no overflow, no underflow", 1.0, _large,
              rtol=1e-5, atol=1e-5,
              hint="Exponentiate only s - m_new, where m_new is the running max INCLUDING this chunk, and rescale "
                   "l and acc by exp(m - m_new) when it grows.",
              bugs=_bugs("max_stays_init", "no_rescale_sum", "no_rescale_acc", "no_rescale", "inverted_rescale", "no_max",
                         "max_frozen", "shared_max", "stop_early", "skip_partial")),
    ])

causal_q = Question(
    "ex08.q2", "online_softmax_attention", "online_softmax_attention(q, k, v, chunk_size, causal=True)", _ref, [
        Check("causal=True: query i attends keys j ≤ i, for several chunk sizes", 1.5, _causal_square,
              rtol=1e-5, atol=1e-5,
              hint="In each chunk, mask with the keys' global positions: keep = np.arange(start, stop)[None, :] <= "
                   "np.arange(T)[:, None]; set the other scores to -inf before the exponential.",
              bugs=_bugs(*ALGORITHM, *CHUNKS, *CAUSAL)),
        Check("causal with T ≠ S: aligned at the top-left corner", 1.0, _causal_rect, rtol=1e-5, atol=1e-5,
              hint="Query i sees keys j <= i for every i < T and j < S, also when T ≠ S (more queries than keys, "
                   "or fewer).",
              bugs=_bugs(*ALGORITHM, "stop_early", "overlap", *CAUSAL, "bottom_right")),
        Check("causal with heads (float32) and with large scores", 0.5, _causal_more, rtol=1e-5, atol=1e-5,
              hint="The causal mask (T, S-chunk) broadcasts over leading dimensions; keep subtracting the running max.",
              bugs=_bugs(*ALGORITHM, *CHUNKS, "no_max", "max_frozen", "shared_max", *CAUSAL)),
    ])

memory_q = Question(
    "ex08.q3", "online_softmax_attention", "online_softmax_attention: bounded memory", _memory_reference, [
        Check(f"T = S = 2048, chunk_size=128: right output and peak memory below {BUDGET_MIB} MiB (one (T, S) "
              f"float64 matrix is 32 MiB)", 2.0, _memory, rtol=1e-5, atol=1e-5,
              hint=f"Keep at most a few (T, chunk_size) blocks alive at a time: the peak memory of one call must "
                   f"stay below {BUDGET_MIB} MiB.",
              output_hints={1: "The output is wrong on these larger inputs (float64, T = S = 2048): questions 1 and 2 "
                               "find the mistake on small ones."},
              bugs=[Bug(FULL_MATRIX, _naive_under_driver)]),
    ], driver="online_memory", outputs=("over_budget", "output"))

EXERCISE = Exercise("ex08", "ex08_online_softmax", "Online-softmax attention", [online_q, causal_q, memory_q])
