"""Exercise 10 · Rotary positions and grouped-query attention.

Question 1: ``rotary_embedding(x, positions=None, max_wavelength=10000.0)`` on ``(..., T, D)``,
``D`` even, half-split pairs: feature ``i`` rotates with feature ``i + D/2`` by the angle
``position · max_wavelength^(−2i/D)`` (Su et al. 2021, in the layout of Llama and keras_hub).
Question 2: ``grouped_query_attention(q, k, v, mask=None)`` → ``(output, weights)`` with q
``(B, Nq, T, H)``, k and v ``(B, Nkv, S, H)``; query head ``i`` reads key/value head
``i // (Nq // Nkv)`` (Ainslie et al. 2023); scores scaled by ``1/√H``; a boolean mask (True =
may attend) broadcastable to ``(B, Nq, T, S)``; fully masked rows give zeros.

The references are the package's NumPy implementations (hidden from the graded kernel by
the sandbox). The bugs are one small implementation per question with one classic mistake
switched on.
"""

from __future__ import annotations

import numpy as np

from ..attention import causal_mask as _causal
from ..attention import grouped_query_attention as _gqa
from ..attention import rotary_embedding as _rope
from .spec import Bug, Case, Check, Exercise, Question


def _ref_rope(x, positions=None, max_wavelength=10000.0):
    return _rope(x, positions, max_wavelength)


def _ref_gqa(q, k, v, mask=None):
    return _gqa(q, k, v, mask)


# --------------------------------------------------------------------------------------
# Question 1 · rotary_embedding: a half-split implementation with one mistake switched on
# --------------------------------------------------------------------------------------

def _rotary(bug=None):
    """RoPE with the mistake ``bug`` (None: no mistake)."""
    def fn(x, positions=None, max_wavelength=10000.0):
        x = np.asarray(x, dtype=float)
        t, d = x.shape[-2], x.shape[-1]
        if d % 2:
            raise ValueError(f"x has an odd feature size {d}")
        if bug == "positions_ignored" or positions is None:
            positions = np.arange(t)
        positions = np.asarray(positions, dtype=float)
        if bug == "positions_from_one":
            positions = positions + 1
        base = 10000.0 if bug == "wavelength_ignored" else float(max_wavelength)
        i = np.arange(d // 2)
        exponent = {"freq_i_over_d": -i / d, "freq_positive": 2 * i / d, "freq_double": -2 * i / (d // 2)
                    }.get(bug, -2 * i / d)
        if bug == "one_frequency":
            exponent = np.zeros(d // 2)
        frequencies = base ** exponent                                   # (D/2,)
        angles = positions[..., None] * frequencies                      # (..., T, D/2)
        if bug == "interleaved":   # pairs (2i, 2i + 1), as in the paper; not this contract
            x1, x2 = x[..., 0::2], x[..., 1::2]
            cos, sin = np.cos(angles), np.sin(angles)
            y = np.empty(np.broadcast_shapes(x.shape, angles.shape[:-1] + (d,)))
            y[..., 0::2], y[..., 1::2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
            return y
        if bug == "repeat_angles":  # the interleaved layout of the angles with half-split pairs
            angles = np.repeat(angles, 2, axis=-1)                       # (..., T, D)
        else:
            angles = np.concatenate([angles, angles], axis=-1)           # (..., T, D)
        rotated = np.concatenate([-x[..., d // 2:], x[..., :d // 2]], axis=-1)   # rotate_half
        if bug == "minus_sin":
            rotated = -rotated
        return x * np.cos(angles) + rotated * np.sin(angles)
    fn.__name__ = f"rotary_{bug}" if bug else "rotary"
    return fn


INTERLEAVED = ("You pair neighbouring features (2i, 2i + 1), as the RoPE paper writes it; this contract uses "
               "half-split pairs (as Llama and keras_hub): feature i rotates with feature i + D/2, "
               "x1 = x[..., :D//2], x2 = x[..., D//2:].")
REPEAT_ANGLES = ("Feature i and feature i + D/2 share the angle θ_i, so the (..., T, D) angles are "
                 "np.concatenate([θ, θ], axis=-1); np.repeat(θ, 2, axis=-1) gives θ_0, θ_0, θ_1, θ_1, … — the "
                 "layout of interleaved pairs.")
FREQ_I_OVER_D = ("Pair i turns at ω_i = max_wavelength^(−2i/D), with i = 0 … D/2 − 1; you use "
                 "max_wavelength^(−i/D). (np.arange(0, D, 2) / D already holds the 2i/D.)")
FREQ_POSITIVE = ("The exponent's sign is flipped: ω_i = max_wavelength^(−2i/D) shrinks with i (pair 0 turns "
                 "fastest, one radian per position); yours grows.")
FREQ_DOUBLE = ("Your frequencies fall twice too fast: ω_i = max_wavelength^(−2i/D) with i = 0 … D/2 − 1; dividing "
               "2i by D/2 instead of D gives max_wavelength^(−4i/D).")
ONE_FREQUENCY = ("Every pair turns at the same rate: pair i turns at its own frequency "
                 "ω_i = max_wavelength^(−2i/D), so the angle is position · ω_i.")
MINUS_SIN = ("Your rotation runs backwards (by −θ): y_i = x_i cos θ − x_{i+D/2} sin θ and "
             "y_{i+D/2} = x_{i+D/2} cos θ + x_i sin θ; rotate_half(x) is concat([−x2, x1]).")
POSITIONS_IGNORED = ("`positions` is ignored: use the given positions when there are some, and 0 … T−1 only "
                     "when positions is None.")
POSITIONS_FROM_ONE = "Positions start at 0: the default is np.arange(T), and given positions are used as they are."
WAVELENGTH_IGNORED = "`max_wavelength` is ignored: the frequencies are max_wavelength^(−2i/D), not 10000^(−2i/D)."

ROPE_CATALOGUE = {
    "interleaved": INTERLEAVED, "repeat_angles": REPEAT_ANGLES, "freq_i_over_d": FREQ_I_OVER_D,
    "freq_positive": FREQ_POSITIVE, "freq_double": FREQ_DOUBLE, "one_frequency": ONE_FREQUENCY,
    "minus_sin": MINUS_SIN, "positions_from_one": POSITIONS_FROM_ONE, "positions_ignored": POSITIONS_IGNORED,
    "wavelength_ignored": WAVELENGTH_IGNORED,
}
_ROPE_BUGS = {name: Bug(hint, _rotary(name)) for name, hint in ROPE_CATALOGUE.items()}
#: Mistakes visible with the default positions and wavelength.
ROPE_ALWAYS = ("interleaved", "repeat_angles", "freq_i_over_d", "freq_positive", "freq_double", "one_frequency",
               "minus_sin", "positions_from_one")


def _rope_bugs(*names):
    return [_ROPE_BUGS[n] for n in ROPE_CATALOGUE if n in names]


def _default_positions(rng):
    return [Case((rng.normal(size=(5, 4)),), label="x (5, 4): T = 5 positions, D = 4"),
            Case((rng.normal(size=(3, 8)),), label="x (3, 8): T = 3 positions, D = 8")]


def _given_positions(rng):
    return [Case((rng.normal(size=(4, 6)), np.array([3, 0, 10, 7])), label="x (4, 6), positions [3, 0, 10, 7]"),
            Case((rng.normal(size=(3, 4)), np.array([1000.0, 1001.0, 4096.0])), {"max_wavelength": 100.0},
                 label="x (3, 4), positions [1000, 1001, 4096], max_wavelength=100"),
            Case((rng.normal(size=(2, 8)),), {"positions": np.array([2.5, 40.0]), "max_wavelength": 500000.0},
                 label="x (2, 8), positions [2.5, 40] (fractional), max_wavelength=500000")]


def _rope_heads(rng):
    x = rng.normal(size=(2, 3, 4, 6)).astype(np.float32)
    positions = np.array([[[0, 1, 2, 3]], [[5, 6, 7, 8]]])      # (B, 1, T): two examples at different offsets
    return [Case((x,), label="float32 heads x (2, 3, 4, 6)"),
            Case((x, positions), {"max_wavelength": 1000.0},
                 label="float32 heads x (2, 3, 4, 6), positions (2, 1, 4) (one row per example), max_wavelength=1000")]


def _odd(rng):
    return [Case((rng.normal(size=(3, 5)),), label="x (3, 5): D = 5 is odd")]


ROPE_GENERIC = ("x1, x2 = x[..., :D//2], x[..., D//2:]; ω = max_wavelength ** (−np.arange(0, D, 2) / D); "
                "θ = positions[..., None] * ω (positions default to np.arange(T)); return "
                "concat([x1 cos θ − x2 sin θ, x2 cos θ + x1 sin θ], axis=−1).")

rope_q = Question(
    "ex10.q1", "rotary_embedding", "rotary_embedding(x, positions=None, max_wavelength=10000.0)", _ref_rope, [
        Check("default positions 0 … T−1: feature i rotates with feature i + D/2", 1.5, _default_positions,
              hint=ROPE_GENERIC, bugs=_rope_bugs(*ROPE_ALWAYS)),
        Check("given positions (any order, large, fractional) and max_wavelength", 1.0, _given_positions,
              hint="Use `positions` as given (shape (T,) here) and `max_wavelength` as the base of the frequencies.",
              bugs=_rope_bugs(*ROPE_CATALOGUE)),
        Check("heads (B, N, T, H) in float32, positions broadcast to (..., T)", 1.0, _rope_heads, rtol=1e-5, atol=1e-6,
              hint="Work on the last two axes only: θ = positions[..., None] * ω has shape (..., T, D/2) and "
                   "broadcasts against x[..., :D//2].",
              bugs=_rope_bugs(*ROPE_CATALOGUE)),
        Check("an odd feature size D raises ValueError", 0.5, _odd, expect="raise",
              hint="Features i and i + D/2 form pairs: raise ValueError when D = x.shape[-1] is odd."),
    ])


# --------------------------------------------------------------------------------------
# Question 2 · grouped_query_attention
# --------------------------------------------------------------------------------------

def _grouped(bug=None):
    """Grouped-query attention with the mistake ``bug`` (None: no mistake)."""
    def fn(q, k, v, mask=None):
        q, k, v = (np.asarray(a, dtype=float) for a in (q, k, v))
        n_q, n_kv, h = q.shape[-3], k.shape[-3], q.shape[-1]
        if n_q % n_kv:
            raise ValueError("Nkv must divide Nq")
        group = n_q // n_kv
        heads = {"tile": np.arange(n_q) % n_kv, "divide_by_nkv": np.arange(n_q) // n_kv}.get(bug, np.arange(n_q) // group)
        k, v = k[..., heads, :, :], v[..., heads, :, :]                  # (B, Nq, S, H): IndexError possible
        scale = {"unscaled": 1.0, "by_h": h, "by_all_heads": np.sqrt(n_q * h), "by_kv_heads": np.sqrt(n_kv * h)
                 }.get(bug, np.sqrt(h))
        scores = q @ np.swapaxes(k, -1, -2) / scale                       # (B, Nq, T, S)
        keep = np.ones(scores.shape, dtype=bool) if mask is None else np.broadcast_to(mask, scores.shape)
        if bug == "inverted":
            keep = ~keep
        if bug == "mask_after":
            e = np.exp(scores - scores.max(axis=-1, keepdims=True))
            w = e / e.sum(axis=-1, keepdims=True) * keep
            return w @ v, w
        axis = -2 if bug == "query_axis" else -1
        if bug == "uniform":
            z = np.where(keep, scores, -1e9)
        else:
            z = np.where(keep, scores, -np.inf)
        m = z.max(axis=axis, keepdims=True)
        if bug not in ("nan", "uniform"):
            m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(z - m)
        total = e.sum(axis=axis, keepdims=True)
        w = e / total if bug in ("nan", "uniform") else np.divide(e, total, out=np.zeros_like(e), where=total > 0)
        return w @ v, w
    fn.__name__ = f"gqa_{bug}" if bug else "gqa"
    return fn


TILE = ("Query head i reads key/value head i // G (G = Nq // Nkv: consecutive query heads share one KV head), "
        "not i % Nkv: use np.repeat(k, G, axis=1), not np.tile.")
DIVIDE_BY_NKV = ("Query head i reads key/value head i // G, where G = Nq // Nkv is the size of a group; you divide "
                 "by Nkv. The two agree only when Nq = Nkv².")
UNSCALED = "The scores are not scaled: divide q kᵀ by √H (H = q.shape[-1]) before the softmax."
BY_H = "You scale by H; scale by √H (np.sqrt(q.shape[-1])), as in scaled dot-product attention."
BY_ALL_HEADS = ("You scale by √(Nq·H), the size of all heads together; each head is a separate attention with "
                "head size H: scale by √H.")
BY_KV_HEADS = "You scale by √(Nkv·H); each head is a separate attention with head size H: scale by √H."
QUERY_AXIS = ("The softmax runs over the queries (axis −2); each query's weights must sum to 1 over the keys "
              "(axis −1).")
INVERTED = "Mask polarity is inverted: True means 'may attend' (keep), False means masked."
MASK_AFTER = ("You zero the masked weights after the softmax without renormalising; mask the scores (−inf) "
              "before the softmax.")
NAN_ROWS = ("A fully masked row is all −inf and becomes NaN: return zero weights (and so a zero output) for a query "
            "with no visible key, e.g. subtract a max of 0 there and divide only where the row sum is > 0.")
UNIFORM_ROWS = ("Filling masked scores with −1e9 gives a fully masked row uniform weights 1/S instead of zeros: a "
                "query with no visible key must get zero weights and a zero output.")

GQA_CATALOGUE = {
    "tile": TILE, "divide_by_nkv": DIVIDE_BY_NKV, "unscaled": UNSCALED, "by_h": BY_H, "by_all_heads": BY_ALL_HEADS,
    "by_kv_heads": BY_KV_HEADS, "query_axis": QUERY_AXIS, "inverted": INVERTED, "mask_after": MASK_AFTER,
    "nan": NAN_ROWS, "uniform": UNIFORM_ROWS,
}
_GQA_BUGS = {name: Bug(hint, _grouped(name)) for name, hint in GQA_CATALOGUE.items()}
ATTENTION = ("unscaled", "by_h", "by_all_heads", "by_kv_heads", "query_axis")


def _gqa_bugs(*names):
    return [_GQA_BUGS[n] for n in GQA_CATALOGUE if n in names]


def _heads(rng, b, n_q, n_kv, t, s, h, dtype=float):
    return tuple(rng.normal(size=shape).astype(dtype) for shape in ((b, n_q, t, h), (b, n_kv, s, h), (b, n_kv, s, h)))


def _multi_head(rng):
    return [Case(_heads(rng, 2, 2, 2, 3, 5, 4), label="Nq = Nkv = 2: q (2, 2, 3, 4), k and v (2, 2, 5, 4)")]


def _groups(rng):
    return [Case(_heads(rng, 1, 4, 2, 3, 4, 4), label="Nq = 4, Nkv = 2: q (1, 4, 3, 4), k and v (1, 2, 4, 4)"),
            Case(_heads(rng, 2, 6, 3, 2, 5, 2), label="Nq = 6, Nkv = 3: q (2, 6, 2, 2), k and v (2, 3, 5, 2)"),
            Case(_heads(rng, 1, 3, 1, 4, 3, 4, np.float32),
                 label="multi-query, float32: Nq = 3, Nkv = 1, q (1, 3, 4, 4), k and v (1, 1, 3, 4)")]


def _masks(rng):
    padding = np.ones((2, 1, 1, 5), dtype=bool)
    padding[1, ..., 3:] = False                                       # example 1 has 3 real keys
    per_head = rng.random((1, 4, 3, 4)) < 0.6
    per_head[..., 0] = True
    return [Case(_heads(rng, 1, 4, 2, 4, 4, 2) + (_causal(4),), label="causal (T, S) = (4, 4) mask, Nq = 4, Nkv = 2"),
            Case(_heads(rng, 2, 2, 1, 3, 5, 4) + (padding,), label="padding mask (2, 1, 1, 5), Nq = 2, Nkv = 1"),
            Case(_heads(rng, 1, 4, 2, 3, 4, 4) + (per_head,), label="a random (1, 4, 3, 4) mask, one per query head")]


def _fully_masked(rng):
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False
    return [Case(_heads(rng, 1, 4, 2, 3, 4, 4) + (mask,),
                 label="a (3, 4) mask whose second query row is all False, Nq = 4, Nkv = 2")]


def _bad_heads(rng):
    return [Case(_heads(rng, 1, 4, 3, 2, 2, 4), label="Nq = 4 query heads, Nkv = 3 key/value heads")]


gqa_q = Question(
    "ex10.q2", "grouped_query_attention", "grouped_query_attention(q, k, v, mask=None)", _ref_gqa, [
        Check("Nq = Nkv: multi-head attention, softmax(q kᵀ / √H) v per head", 1.0, _multi_head,
              hint="scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(H) (B, N, T, S); weights = softmax over the last "
                   "axis; return (weights @ v, weights).",
              bugs=_gqa_bugs(*ATTENTION)),
        Check("groups: query head i reads key/value head i // (Nq // Nkv); multi-query (Nkv = 1)", 1.5, _groups,
              rtol=1e-5, atol=1e-6,
              hint="With G = Nq // Nkv, repeat each key/value head G times along the head axis "
                   "(np.repeat(k, G, axis=1)): query heads 0 … G−1 read KV head 0, heads G … 2G−1 KV head 1, …",
              bugs=_gqa_bugs("tile", "divide_by_nkv", *ATTENTION)),
        Check("boolean masks broadcast to (B, Nq, T, S): causal, padding, one per head", 1.0, _masks,
              hint="Broadcast the mask to the scores' shape (B, Nq, T, S), set the scores where it is False to −inf "
                   "before the softmax.",
              bugs=_gqa_bugs("tile", "divide_by_nkv", *ATTENTION, "inverted", "mask_after")),
        Check("a fully masked query row gives zero weights and a zero output", 0.5, _fully_masked,
              hint="A query with no visible key gets zero weights and a zero output, not NaN and not uniform weights.",
              bugs=_gqa_bugs("tile", *ATTENTION, "inverted", "nan", "uniform")),
        Check("Nkv not dividing Nq raises ValueError", 0.5, _bad_heads, expect="raise",
              hint="Raise ValueError when Nq % Nkv != 0: the query heads cannot be split into equal groups."),
    ], outputs=("output", "weights"))

EXERCISE = Exercise("ex10", "ex10_rope_and_gqa", "Rotary positions and grouped-query attention", [rope_q, gqa_q])
