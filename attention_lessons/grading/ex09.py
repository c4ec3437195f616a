"""Exercise 09 · Decoding with a KV cache: update_cache, cached_attention, generate.

The cache follows keras_hub's ``CachedMultiHeadAttention``: one array ``(B, 2, S_max, N, H)``
with the keys at ``[:, 0]`` and the values at ``[:, 1]``; slot ``s`` holds the token at
position ``s``.

* q1 ``update_cache(cache, k_new, v_new, index)`` → a new cache with ``k_new``/``v_new``
  ``(B, T_new, N, H)`` written at slots ``index … index + T_new − 1`` (the input unchanged,
  its dtype kept); ``ValueError`` when they do not fit.
* q2 ``cached_attention(q_new, cache, index)`` → ``(output (B, T_new, N, H), weights
  (B, N, T_new, S_max))``: the new queries sit at positions ``index …``; query ``t`` sees slots
  ``0 … index + t`` only, whatever the later slots hold; scores scaled by ``1/√H``.
* q3 ``generate(params, prompt, n_new)`` → ``(tokens (B, P + n_new), logits (B, n_new, V),
  cache (B, 2, P + n_new, N, H))``: greedy decoding of the notebook's one-layer decoder
  (RoPE on queries and keys) with the cache; the reference is full recomputation of every
  prefix, so the student's logits and tokens must equal it.
* q4 the same ``generate``, run through :func:`drivers.decoding_work`: it must project each
  token once (at most 2·(P + n_new) rows through the given ``project``), which full
  recomputation at every step (right outputs, no saving) does not.

The model below is the notebook's given code, kept equal to it by tests/test_grading_ex09.py.
The bugs are one small implementation per question with one classic mistake switched on.
"""

from __future__ import annotations

import numpy as np

from .drivers import decoding_work
from .spec import Bug, Case, Check, Exercise, Question

#: The decoder of the notebook: vocabulary, model width, heads, head size.
VOCAB, D_MODEL, HEADS, HEAD_DIM = 12, 8, 2, 4


# --------------------------------------------------------------------------------------
# The notebook's decoder (given to students; the same code runs in the notebook)
# --------------------------------------------------------------------------------------

def make_params(seed: int = 0) -> dict:
    """Random weights of the one-layer decoder (the notebook's ``make_params``)."""
    rng = np.random.default_rng(seed)
    return _draw_params(rng)


def _draw_params(rng) -> dict:
    return {"embedding": rng.normal(size=(VOCAB, D_MODEL)),
            "query": rng.normal(size=(D_MODEL, HEADS, HEAD_DIM)) / np.sqrt(D_MODEL) * 2.0,
            "key": rng.normal(size=(D_MODEL, HEADS, HEAD_DIM)) / np.sqrt(D_MODEL) * 2.0,
            "value": rng.normal(size=(D_MODEL, HEADS, HEAD_DIM)) / np.sqrt(D_MODEL),
            "output": rng.normal(size=(HEADS, HEAD_DIM, D_MODEL)) / np.sqrt(HEADS * HEAD_DIM),
            "unembedding": rng.normal(size=(D_MODEL, VOCAB)) / np.sqrt(D_MODEL) * 3.0}


def rope(x, positions):
    """Rotate x (B, T, N, H) by its positions (T,), neighbouring pairs (2i, 2i + 1), as complex numbers."""
    x = np.asarray(x, dtype=float)
    h = x.shape[-1]
    z = x[..., 0::2] + 1j * x[..., 1::2]                                   # (B, T, N, H/2)
    angles = np.asarray(positions, dtype=float)[:, None] * 10000.0 ** (-np.arange(0, h, 2) / h)   # (T, H/2)
    z = z * np.exp(1j * angles)[None, :, None, :]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def embed(params, tokens):
    """Token ids (B, T) → vectors (B, T, D)."""
    return np.asarray(params["embedding"], dtype=float)[np.asarray(tokens)]


def project(params, x, positions):
    """x (B, T, D) of the tokens at ``positions`` (T,) → q, k, v, each (B, T, N, H); q and k rotated."""
    q = np.einsum("btd,dnh->btnh", x, params["query"])
    k = np.einsum("btd,dnh->btnh", x, params["key"])
    v = np.einsum("btd,dnh->btnh", x, params["value"])
    return rope(q, positions), rope(k, positions), v


def readout(params, x, context):
    """x (B, T, D) and the attention context (B, T, N, H) → logits (B, T, V)."""
    h = x + np.einsum("btnh,nhd->btd", context, params["output"])
    return np.tanh(h) @ np.asarray(params["unembedding"], dtype=float)


def full_logits(params, tokens):
    """Logits (B, T, V) of every position, recomputed from scratch with a causal mask (no cache)."""
    tokens = np.asarray(tokens)
    t = tokens.shape[1]
    x = embed(params, tokens)
    q, k, v = project(params, x, np.arange(t))
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.tri(t, dtype=bool), scores, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)
    return readout(params, x, np.einsum("bnts,bsnh->btnh", weights, v))


# --------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------

def _ref_update(cache, k_new, v_new, index):
    cache = np.asarray(cache)
    k_new, v_new = np.asarray(k_new), np.asarray(v_new)
    t_new, s_max = k_new.shape[1], cache.shape[2]
    if index < 0 or index + t_new > s_max:
        raise ValueError(f"{t_new} new tokens at index {index} do not fit in {s_max} slots")
    new = np.array(cache, copy=True)
    new[:, 0, index:index + t_new] = k_new
    new[:, 1, index:index + t_new] = v_new
    return new


def _ref_attend(q_new, cache, index):
    q, cache = np.asarray(q_new, dtype=float), np.asarray(cache, dtype=float)
    k, v = cache[:, 0], cache[:, 1]                                         # (B, S_max, N, H)
    t, s = q.shape[1], k.shape[1]
    scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])     # (B, N, T, S_max)
    visible = np.arange(s)[None, :] <= index + np.arange(t)[:, None]       # (T, S_max)
    scores = np.where(visible, scores, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = e / e.sum(axis=-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", weights, v), weights


def _ref_generate(params, prompt, n_new):
    """Greedy decoding by full recomputation: every step runs the whole sequence again."""
    tokens = np.asarray(prompt)
    logits = []
    for _ in range(n_new):
        last = full_logits(params, tokens)[:, -1]                          # (B, V)
        logits.append(last)
        tokens = np.concatenate([tokens, last.argmax(axis=-1)[:, None]], axis=1)
    _, k, v = project(params, embed(params, tokens), np.arange(tokens.shape[1]))
    return tokens, np.stack(logits, axis=1), np.stack([k, v], axis=1)


# --------------------------------------------------------------------------------------
# Question 1 · update_cache bugs
# --------------------------------------------------------------------------------------

def _updater(bug=None):
    def fn(cache, k_new, v_new, index):
        cache, k_new, v_new = np.asarray(cache), np.asarray(k_new), np.asarray(v_new)
        t_new, s_max = k_new.shape[1], cache.shape[2]
        if index < 0 or index + t_new > s_max:
            raise ValueError("does not fit")
        new = np.array(cache, copy=True)
        at = {"after": index + 1, "before": index - 1}.get(bug, index)
        if bug == "first_only":
            new[:, 0, at], new[:, 1, at] = k_new[:, 0], v_new[:, 0]
        elif bug == "to_end":
            new[:, 0, at:], new[:, 1, at:] = k_new, v_new
        else:
            first, second = (1, 0) if bug == "swapped" else (0, 1)
            new[:, first, at:at + t_new] = k_new
            new[:, second, at:at + t_new] = k_new if bug == "keys_twice" else v_new
        return new
    fn.__name__ = f"update_{bug}" if bug else "update"
    return fn


AFTER = ("The new keys and values go one slot too far: token t of the new block goes to slot index + t "
         "(the first at `index` itself), i.e. cache[:, 0, index:index + T_new] = k_new.")
BEFORE = ("The new keys and values go one slot too early (they overwrite the previous token): the first new token "
          "goes to slot `index`, i.e. cache[:, 0, index:index + T_new] = k_new.")
SWAPPED = "Keys and values are swapped: keys go to cache[:, 0], values to cache[:, 1] (keras_hub's layout)."
KEYS_TWICE = "The values slot holds the keys: write v_new into cache[:, 1] (the keys go to cache[:, 0])."
FIRST_ONLY = ("Only the first new token is written: k_new holds T_new tokens (a whole prompt at once) that go to "
              "slots index … index + T_new − 1: cache[:, 0, index:index + T_new] = k_new.")
TO_END = ("You write into every slot from `index` to the end (cache[:, 0, index:] = k_new broadcasts one token over "
          "all later slots): write only the T_new slots index:index + T_new.")

UPDATE_CATALOGUE = {"after": AFTER, "before": BEFORE, "swapped": SWAPPED, "keys_twice": KEYS_TWICE,
                    "first_only": FIRST_ONLY, "to_end": TO_END}
_UPDATE_BUGS = {name: Bug(hint, _updater(name)) for name, hint in UPDATE_CATALOGUE.items()}


def _update_bugs(*names):
    return [_UPDATE_BUGS[n] for n in UPDATE_CATALOGUE if n in names]


def _filled_cache(rng, b, s_max, filled, dtype=float):
    """A cache whose first ``filled`` slots hold earlier tokens and the rest zeros."""
    cache = np.zeros((b, 2, s_max, HEADS, HEAD_DIM), dtype=dtype)
    cache[:, :, :filled] = rng.normal(size=(b, 2, filled, HEADS, HEAD_DIM))
    return cache


def _kv(rng, b, t, dtype=float):
    return tuple(rng.normal(size=(b, t, HEADS, HEAD_DIM)).astype(dtype) for _ in range(2))


def _one_token(rng):
    return [Case((_filled_cache(rng, 1, 6, 3),) + _kv(rng, 1, 1) + (3,),
                 label="cache (1, 2, 6, 2, 4) with slots 0–2 filled, one new token at index 3"),
            Case((_filled_cache(rng, 2, 4, 0),) + _kv(rng, 2, 1) + (0,),
                 label="an empty cache (2, 2, 4, 2, 4), one new token at index 0")]


def _block(rng):
    return [Case((_filled_cache(rng, 1, 5, 0),) + _kv(rng, 1, 3) + (0,),
                 label="a prompt of 3 tokens into an empty cache (1, 2, 5, 2, 4) at index 0"),
            Case((_filled_cache(rng, 2, 6, 4),) + _kv(rng, 2, 2) + (4,),
                 label="2 new tokens at index 4 fill the cache (2, 2, 6, 2, 4) to its end")]


def _float32_cache(rng):
    return [Case((_filled_cache(rng, 1, 4, 1, np.float32),) + _kv(rng, 1, 2, np.float32) + (1,),
                 label="float32 cache (1, 2, 4, 2, 4), 2 new float32 tokens at index 1")]


def _overflow(rng):
    return [Case((_filled_cache(rng, 1, 4, 3),) + _kv(rng, 1, 2) + (3,), label="2 new tokens at index 3 of 4 slots"),
            Case((_filled_cache(rng, 1, 4, 0),) + _kv(rng, 1, 1) + (-1,), label="index -1")]


update_q = Question(
    "ex09.q1", "update_cache", "update_cache(cache, k_new, v_new, index)", _ref_update, [
        Check("one new token: its key at cache[:, 0, index], its value at cache[:, 1, index], the rest unchanged",
              1.0, _one_token,
              hint="Copy the cache (new = cache.copy()), then new[:, 0, index:index + T_new] = k_new and "
                   "new[:, 1, index:index + T_new] = v_new; return new.",
              bugs=_update_bugs("after", "before", "swapped", "keys_twice", "to_end")),
        Check("a block of T_new tokens (a prompt) goes to slots index … index + T_new − 1", 1.0, _block,
              hint="k_new has shape (B, T_new, N, H): all its T_new tokens go to the slots index:index + T_new.",
              bugs=_update_bugs(*UPDATE_CATALOGUE)),
        Check("a float32 cache stays float32", 0.5, _float32_cache, dtype=True,
              hint="Return a cache of the input cache's dtype: copy it with cache.copy() (or np.array(cache)), "
                   "not with a float64 conversion.",
              bugs=_update_bugs(*UPDATE_CATALOGUE)),
        Check("tokens that do not fit (index + T_new > S_max, or index < 0) raise ValueError", 0.5, _overflow,
              expect="raise",
              hint="Check 0 <= index and index + T_new <= S_max (= cache.shape[2]) and raise ValueError otherwise: "
                   "NumPy's slicing would silently write fewer tokens (or none, for a negative index)."),
    ])


# --------------------------------------------------------------------------------------
# Question 2 · cached_attention bugs
# --------------------------------------------------------------------------------------

def _attender(bug=None):
    def fn(q_new, cache, index):
        q, cache = np.asarray(q_new, dtype=float), np.asarray(cache, dtype=float)
        k, v = (cache[:, 1], cache[:, 0]) if bug == "kv_swapped" else (cache[:, 0], cache[:, 1])
        t, s, h = q.shape[1], k.shape[1], q.shape[-1]
        scale = {"unscaled": 1.0, "by_h": h, "by_all_heads": np.sqrt(q.shape[2] * h)}.get(bug, np.sqrt(h))
        scores = np.einsum("btnh,bsnh->bnts", q, k) / scale
        cols, rows = np.arange(s)[None, :], np.arange(t)[:, None]
        visible = {"all_visible": np.ones((t, s), dtype=bool), "block_not_causal": cols < index + t,
                   "excludes_self": cols < index + rows, "excludes_self_guarded": cols < index + rows,
                   "sees_next": cols <= index + rows + 1, "local": cols <= rows}.get(bug, cols <= index + rows)
        scores = np.where(visible, scores, -np.inf)
        axis = -2 if bug == "query_axis" else -1
        m = scores.max(axis=axis, keepdims=True)
        if bug == "excludes_self_guarded":
            m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(scores - m)
        total = e.sum(axis=axis, keepdims=True)
        if bug == "excludes_self_guarded":
            weights = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
        else:
            weights = e / total
        return np.einsum("bnts,bsnh->btnh", weights, v), weights
    fn.__name__ = f"attend_{bug}" if bug else "attend"
    return fn


ALL_VISIBLE = ("Every slot of the cache is visible, also those not written yet (zeros, or stale keys of an earlier "
               "sequence): query t of the new block (position index + t) may see slots 0 … index + t only.")
BLOCK_NOT_CAUSAL = ("Within a block of new queries (a prompt), each query sees the whole block: query t (position "
                    "index + t) must not see the later new tokens, slots > index + t.")
EXCLUDES_SELF = ("A new token must see itself: its key is already in the cache (update_cache runs first), so query t "
                 "sees slots j <= index + t, not j < index + t.")
SEES_NEXT = ("Query t sees one slot too many: the slot after its own (index + t + 1) holds a later token or nothing; "
             "the visible slots are j <= index + t.")
LOCAL = ("The mask ignores `index`: the new queries sit at positions index, index + 1, …, so query t sees slots "
         "j <= index + t, not j <= t.")
KV_SWAPPED = "Keys and values are swapped: the keys are cache[:, 0] and the values cache[:, 1]."
QUERY_AXIS = ("The softmax runs over the new queries (axis −2 of the (B, N, T_new, S_max) scores); each query's "
              "weights must sum to 1 over the cache slots (axis −1).")
ATT_UNSCALED = "The scores are not scaled: divide q·k by √H (H = q_new.shape[-1]) before the softmax."
ATT_BY_H = "You scale by H; scale by √H (np.sqrt(q_new.shape[-1])), as in scaled dot-product attention."
ATT_BY_ALL_HEADS = "You scale by √(N·H); each head is a separate attention of size H: scale by √H."

ATTEND_CATALOGUE = {"all_visible": ALL_VISIBLE, "block_not_causal": BLOCK_NOT_CAUSAL, "excludes_self": EXCLUDES_SELF,
                    "excludes_self_guarded": EXCLUDES_SELF, "sees_next": SEES_NEXT, "local": LOCAL,
                    "kv_swapped": KV_SWAPPED, "query_axis": QUERY_AXIS, "unscaled": ATT_UNSCALED, "by_h": ATT_BY_H,
                    "by_all_heads": ATT_BY_ALL_HEADS}
_ATTEND_BUGS = {name: Bug(hint, _attender(name)) for name, hint in ATTEND_CATALOGUE.items()}


def _attend_bugs(*names):
    return [_ATTEND_BUGS[n] for n in ATTEND_CATALOGUE if n in names]


def _queries(rng, b, t, dtype=float):
    return rng.normal(size=(b, t, HEADS, HEAD_DIM)).astype(dtype)


def _stale(cache, filled, rng):
    """Slots from ``filled`` on hold the keys and values of an earlier, longer sequence."""
    cache = cache.copy()
    cache[:, :, filled:] = rng.normal(size=cache[:, :, filled:].shape)
    return cache


def _one_query(rng):
    return [Case((_queries(rng, 1, 1), _filled_cache(rng, 1, 6, 4), 3),
                 label="one new query at index 3, cache (1, 2, 6, 2, 4) with slots 0–3 written, 4–5 zeros"),
            Case((_queries(rng, 2, 1), _stale(_filled_cache(rng, 2, 5, 1), 1, rng), 0),
                 label="one new query at index 0 (the first token), slots 1–4 hold stale keys of an earlier sequence")]


def _block_queries(rng):
    return [Case((_queries(rng, 1, 3), _filled_cache(rng, 1, 5, 3), 0),
                 label="a prompt of 3 queries at index 0, cache (1, 2, 5, 2, 4) with slots 0–2 written"),
            Case((_queries(rng, 1, 2), _stale(_filled_cache(rng, 1, 7, 5), 5, rng), 3),
                 label="2 new queries at index 3 (positions 3, 4), slots 5–6 hold stale keys")]


def _batched_queries(rng):
    return [Case((_queries(rng, 3, 2, np.float32), _filled_cache(rng, 3, 6, 4, np.float32), 2),
                 label="float32: a batch of 3, 2 new queries at index 2, cache (3, 2, 6, 2, 4)")]


attend_q = Question(
    "ex09.q2", "cached_attention", "cached_attention(q_new, cache, index)", _ref_attend, [
        Check("one new query at position index sees slots 0 … index, never the later ones", 1.5, _one_query,
              hint="k, v = cache[:, 0], cache[:, 1]; scores = einsum('btnh,bsnh->bnts', q_new, k) / √H; set the "
                   "scores of slots j > index + t to −inf; softmax over the slots; output = "
                   "einsum('bnts,bsnh->btnh', weights, v).",
              bugs=_attend_bugs("all_visible", "excludes_self", "excludes_self_guarded", "sees_next", "local",
                                "kv_swapped", "query_axis", "unscaled", "by_h", "by_all_heads")),
        Check("a block of new queries (a prompt): query t sees slots 0 … index + t", 1.0, _block_queries,
              hint="Build the (T_new, S_max) mask from the GLOBAL positions: slot j is visible to query t when "
                   "j <= index + t.",
              bugs=_attend_bugs(*ATTEND_CATALOGUE)),
        Check("a batch, float32", 0.5, _batched_queries, rtol=1e-5, atol=1e-6,
              hint="Keep the batch axis first everywhere: q_new (B, T_new, N, H), keys (B, S_max, N, H), weights "
                   "(B, N, T_new, S_max).",
              bugs=_attend_bugs(*ATTEND_CATALOGUE)),
    ], outputs=("output", "weights"))


# --------------------------------------------------------------------------------------
# Question 3 · generate bugs: a cached greedy loop with one mistake switched on
# --------------------------------------------------------------------------------------

def _generator(bug=None):
    def fn(params, prompt, n_new):
        prompt = np.asarray(prompt)
        b, n_prompt = prompt.shape
        n_heads, head = np.shape(params["query"])[1:]
        cache = np.zeros((b, 2, n_prompt + n_new, n_heads, head))
        x = embed(params, prompt)
        q, k, v = project(params, x, np.arange(n_prompt))
        cache = _ref_update(cache, k, v, 0)
        context, _ = _ref_attend(q, cache, 0)
        last = readout(params, x, context)[:, 0 if bug == "first_position" else -1]      # (B, V)
        tokens, logits, token = [prompt], [], prompt[:, -1:]
        for i in range(n_new):
            new = last.argmax(axis=-1)[:, None]                                          # (B, 1)
            if bug != "logits_shifted":
                logits.append(last)
            tokens.append(new)
            if bug != "stale_token":
                token = new
            if bug == "last_not_fed" and i == n_new - 1:
                break
            index = {"index_after": n_prompt + i + 1, "index_before": n_prompt + i - 1}.get(bug, n_prompt + i)
            position = {"positions_restart": 0, "position_after": n_prompt + i + 1}.get(bug, index)
            x = embed(params, token)
            q, k, v = project(params, x, np.array([position]))
            updated = _ref_update(np.zeros_like(cache) if bug == "fresh_cache" else cache, k, v, index)
            if bug != "not_carried":
                cache = updated
            context, _ = _ref_attend(q, cache, index)
            last = readout(params, x, context)[:, -1]
            if bug == "logits_shifted":
                logits.append(last)
        tokens = np.concatenate(tokens, axis=1)
        if bug == "new_tokens_only":
            tokens = tokens[:, n_prompt:]
        return tokens, np.stack(logits, axis=1), cache
    fn.__name__ = f"generate_{bug}" if bug else "generate"
    return fn


POSITIONS_RESTART = ("Each new token is rotated as if it were at position 0: with RoPE the new token's position is "
                     "its place in the whole sequence, P + i for the i-th generated token (0-based), the same number "
                     "as its cache slot — pass np.array([index]) to project.")
POSITION_AFTER = ("The new token's position is one too large: it is the length of the sequence BEFORE the token was "
                  "appended, P + i for the i-th generated token (0-based), the same number as its cache slot.")
INDEX_AFTER = ("The new token goes one slot too far (index = length after appending): the i-th generated token "
               "(0-based) is at position and slot P + i, and the cache has exactly P + n_new slots. (If question 1 "
               "fails too, update_cache may be what writes one slot too far.)")
INDEX_BEFORE = ("The new token overwrites the previous token's slot: the i-th generated token (0-based) is at "
                "position and slot P + i; slots 0 … P − 1 hold the prompt. (If question 1 fails too, update_cache "
                "may be what writes one slot too early.)")
NOT_CARRIED = ("The cache is not carried from step to step: update_cache returns a NEW cache, so write "
               "`cache = update_cache(cache, k, v, index)`; without the assignment the new keys and values are lost.")
FRESH_CACHE = ("Each step starts from an empty cache, so a new token sees only itself: create the cache once, "
               "before the prompt, and keep updating the same one.")
FIRST_POSITION = ("The first new token is chosen from the logits of the first prompt position; it must come from the "
                  "LAST prompt position (readout(...)[:, -1]), the one that has seen the whole prompt.")
LOGITS_SHIFTED = ("logits[:, i] must be the logits that token P + i was chosen from: record them before feeding the "
                  "new token (the first row comes from the prompt's last position).")
STALE_TOKEN = ("Every step feeds the prompt's last token again: feed the token just generated (its embedding, at "
               "its own position).")
NEW_TOKENS_ONLY = "`tokens` holds the prompt followed by the new tokens: shape (B, P + n_new)."
LAST_NOT_FED = ("The cache must end with the keys and values of all P + n_new tokens: feed the last generated token "
                "too (its logits are not returned, but its slot P + n_new − 1 is filled).")

GENERATE_CATALOGUE = {
    "positions_restart": POSITIONS_RESTART, "position_after": POSITION_AFTER, "index_after": INDEX_AFTER,
    "index_before": INDEX_BEFORE, "not_carried": NOT_CARRIED, "fresh_cache": FRESH_CACHE,
    "first_position": FIRST_POSITION, "logits_shifted": LOGITS_SHIFTED, "stale_token": STALE_TOKEN,
    "new_tokens_only": NEW_TOKENS_ONLY, "last_not_fed": LAST_NOT_FED,
}
_GENERATE_BUGS = {name: Bug(hint, _generator(name)) for name, hint in GENERATE_CATALOGUE.items()}


def _generate_bugs(*names):
    return [_GENERATE_BUGS[n] for n in GENERATE_CATALOGUE if n in names]


def _margin(params, prompt, n_new) -> float:
    """The smallest gap between the best and the second-best logit over the greedy steps."""
    logits = np.sort(_ref_generate(params, prompt, n_new)[1], axis=-1)
    return float((logits[..., -1] - logits[..., -2]).min())


def _decoding_case(rng, b, n_prompt, n_new, label):
    """Weights and a prompt whose greedy choices are clear (a gap of at least 1e-2 between the two best
    logits at every step), so that rounding cannot change a token between two right implementations."""
    for _ in range(100):   # about one draw in ten is redrawn
        params = _draw_params(rng)
        prompt = rng.integers(0, VOCAB, size=(b, n_prompt))
        if _margin(params, prompt, n_new) > 1e-2:
            return Case((params, prompt, n_new), label=label)
    raise RuntimeError("no decoding case with clear greedy choices in 100 draws")


def _single(rng):
    return [_decoding_case(rng, 1, 3, 4, "one prompt of 3 tokens, n_new=4")]


def _batch(rng):
    return [_decoding_case(rng, 2, 4, 6, "a batch of 2 prompts of 4 tokens, n_new=6")]


def _edges(rng):
    return [_decoding_case(rng, 1, 1, 5, "a one-token prompt, n_new=5"),
            _decoding_case(rng, 2, 5, 1, "a batch of 2 prompts of 5 tokens, n_new=1 (the prompt step only)")]


GENERATE_HINT = ("Zero cache (B, 2, P + n_new, N, H); prompt: embed, project at positions 0 … P−1, update_cache at 0, "
                 "cached_attention at 0, readout, keep the last row. Then n_new times: argmax → record its logits and "
                 "the token → embed the token, project at position P + i, update_cache and cached_attention at "
                 "index P + i, readout. Questions 1 and 2 must pass first.")
GENERATE_OUTPUTS = {0: "The tokens differ while the logits and cache do not: take argmax over the vocabulary (axis −1) "
                       "and append the prompt first, then the new tokens in order.",
                    2: "Tokens and logits are right, but the final cache is not: it must hold the keys and values of "
                       "all P + n_new tokens, each rotated at its own position, in slots 0 … P + n_new − 1."}

generate_q = Question(
    "ex09.q3", "generate", "generate(params, prompt, n_new)", _ref_generate, [
        Check("one prompt: tokens, logits and cache equal full recomputation", 1.5, _single, rtol=1e-6, atol=1e-8,
              hint=GENERATE_HINT, output_hints=GENERATE_OUTPUTS,
              bugs=_generate_bugs(*GENERATE_CATALOGUE)),
        Check("a batch of prompts", 1.0, _batch, rtol=1e-6, atol=1e-8, hint=GENERATE_HINT,
              output_hints=GENERATE_OUTPUTS, bugs=_generate_bugs(*GENERATE_CATALOGUE)),
        Check("a one-token prompt; n_new = 1 (the prompt step only)", 0.5, _edges, rtol=1e-6, atol=1e-8,
              hint=GENERATE_HINT, output_hints=GENERATE_OUTPUTS,
              bugs=_generate_bugs(*GENERATE_CATALOGUE)),
    ], outputs=("tokens", "logits", "cache"))

# --------------------------------------------------------------------------------------
# Question 4 · the cache saves the work: each token projected once
# --------------------------------------------------------------------------------------

def _work_reference(params, prompt, n_new):
    """What :func:`drivers.decoding_work` returns for a generate that keeps a cache: 0 and the tokens."""
    return np.array(0.0), _ref_generate(params, prompt, n_new)[0]


def _recomputing_under_driver(params, prompt, n_new):
    # The reference itself recomputes every step (full_logits), then projects the whole
    # sequence once more for the cache: right outputs, none of the saving.
    return decoding_work(_ref_generate, params, prompt, n_new)


_recomputing_under_driver.target = lambda: _ref_generate   # the function itself, for tests

RECOMPUTES = ("Your generate projects the whole sequence again at every step (e.g. with full_logits) instead of "
              "feeding only the new token: the outputs are right, but the cache saves nothing. Project the prompt "
              "once, then one token per step, and let cached_attention read the earlier keys and values from the "
              "cache.")


def _work(rng):
    return [_decoding_case(rng, 1, 4, 10, "one prompt of 4 tokens, n_new=10")]


work_q = Question(
    "ex09.q4", "generate", "generate: each token projected once", _work_reference, [
        Check("each token's keys and values are computed once: `project` sees at most 2·(P + n_new) = 28 token rows "
              "(recomputing every step: about 100)", 1.0, _work, rtol=0, atol=0, hint=RECOMPUTES,
              output_hints={1: "The tokens are wrong on this longer decoding: question 3 finds the mistake on its "
                               "own cases."},
              bugs=[Bug(RECOMPUTES, _recomputing_under_driver)]),
    ], driver="decoding_work", outputs=("recomputed", "tokens"))


EXERCISE = Exercise("ex09", "ex09_kv_cache", "Decoding with a KV cache", [update_q, attend_q, generate_q, work_q])
