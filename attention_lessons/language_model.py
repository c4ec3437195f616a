"""A small decoder-only (GPT-style) language model, sampling, and n-gram baselines (lesson 17).

* :func:`build_language_model` — token + position embedding, a stack of pre-norm
  :class:`~attention_lessons.layers.TransformerEncoderBlock` s called with
  ``use_causal_mask=True`` (a decoder block without cross-attention: causal self-attention
  and a feed-forward net, each in a residual connection), a final ``LayerNormalization``
  and a ``Dense`` layer that gives next-token logits at every position;
* :func:`next_token_probabilities`, :func:`sample_token`, :func:`generate` — greedy,
  temperature and top-k sampling, seeded and deterministic given the model;
* :func:`cross_entropy`, :func:`model_cross_entropy`, :func:`ngram_cross_entropy` — how well a
  model or an add-α n-gram table predicts held-out text (perplexity = exp(cross-entropy)).

The sampling and n-gram functions are NumPy; the module imports Keras for the model.
"""

from __future__ import annotations

import numpy as np

from .device import import_tensorflow
from .layers import PositionalEmbedding, TransformerEncoderBlock

import_tensorflow()    # before Keras, so TensorFlow's C++ start-up logs stay quiet

import keras  # noqa: E402

__all__ = ["build_language_model", "next_token_probabilities", "sample_token",
           "generate", "cross_entropy", "model_cross_entropy", "ngram_cross_entropy"]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


# --------------------------------------------------------------------------- the model
def build_language_model(vocab_size: int, context: int, embed_dim: int = 64, num_heads: int = 4,
                         ff_dim: int = 256, num_layers: int = 2, dropout: float = 0.0,
                         name: str = "language_model"):
    """A decoder-only causal language model and a second model that returns its attention.

    ``ids (B, T) → PositionalEmbedding (learned positions) → num_layers ×
    TransformerEncoderBlock(use_causal_mask=True) → LayerNormalization → Dense(vocab_size) → logits
    (B, T, vocab_size)``;
    the logits at position ``t`` are the model's scores for token ``t + 1``, computed from
    tokens ``0..t`` only.

    Parameters
    ----------
    vocab_size : int
    context : int
        Longest input (number of learned positions), ``T <= context``.
    embed_dim, num_heads, ff_dim, num_layers : int
    dropout : float, default 0.0
    name : str

    Returns
    -------
    (model, attention_probe) : two ``keras.Model`` s on the same layers
        ``model(ids)`` gives the logits ``(B, T, vocab_size)``; ``attention_probe(ids)`` the
        list of the blocks' attention weights, each ``(B, num_heads, T, T)``.
    """
    vocab_size, context = _positive_int(vocab_size, "vocab_size"), _positive_int(context, "context")
    num_layers = _positive_int(num_layers, "num_layers")
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")                         # (B, T)
    x = PositionalEmbedding(vocab_size, context, embed_dim, name="embedding")(ids)      # (B, T, E)
    scores = []
    for i in range(num_layers):
        block = TransformerEncoderBlock(embed_dim, num_heads, ff_dim, dropout=dropout, norm_first=True,
                                        name=f"block_{i}")
        x, s = block(x, use_causal_mask=True, return_attention_scores=True)            # (B, T, E), (B, N, T, T)
        scores.append(s)
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(vocab_size, name="next_token")(x)                       # (B, T, V)
    return keras.Model(ids, logits, name=name), keras.Model(ids, scores, name=f"{name}_attention")


# --------------------------------------------------------------------------- sampling
def next_token_probabilities(logits, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
    """The distribution that sampling draws the next token from, in float64.

    ``softmax(logits / temperature)`` restricted to the ``top_k`` largest logits (ties broken
    towards the smaller id) and renormalised. ``temperature=0`` is greedy decoding: all the
    mass on the largest logit (the smallest id among equal ones).

    Parameters
    ----------
    logits : array, shape (..., V)
    temperature : float >= 0, default 1.0
    top_k : int, optional
        Keep only the ``top_k`` most likely tokens; ``None`` keeps all ``V``.

    Returns
    -------
    ndarray, shape (..., V), float64; rows sum to 1.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim < 1 or logits.shape[-1] < 1 or not np.all(np.isfinite(logits)):
        raise ValueError(f"`logits` must be finite with a last axis of tokens; got shape {logits.shape}.")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"`temperature` must be a finite number >= 0; got {temperature!r}.")
    vocab = logits.shape[-1]
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer))
                              or not 1 <= top_k <= vocab):
        raise ValueError(f"`top_k` must be None or an integer in 1..{vocab} (the last axis of `logits`); "
                         f"got {top_k!r}.")
    order = np.argsort(-logits, axis=-1, kind="stable")                 # (..., V) most likely first
    if temperature == 0:
        probs = np.zeros_like(logits)
        np.put_along_axis(probs, order[..., :1], 1.0, axis=-1)
        return probs
    keep = np.ones(logits.shape, dtype=bool)
    if top_k is not None:
        keep[:] = False
        np.put_along_axis(keep, order[..., :top_k], True, axis=-1)
    scaled = np.where(keep, logits / temperature, -np.inf)
    scaled -= scaled.max(axis=-1, keepdims=True)                        # no overflow in exp
    weights = np.exp(scaled)                                            # 0 outside the top k
    return weights / weights.sum(axis=-1, keepdims=True)


def sample_token(probabilities, rng: np.random.Generator) -> int:
    """Draw one token id from ``probabilities`` (V,) by inverting the cumulative sum.

    One uniform number ``u`` from ``rng``; the token is the first id whose cumulative
    probability exceeds ``u``: the same ``rng`` state gives the same token.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1 or np.any(p < 0) or not np.isclose(p.sum(), 1.0, rtol=1e-9, atol=1e-9):
        raise ValueError(f"`probabilities` must be one distribution (V,) summing to 1; got shape {p.shape}.")
    cumulative = np.cumsum(p)
    u = rng.random() * cumulative[-1]
    return int(min(np.searchsorted(cumulative, u, side="right"), len(p) - 1))


def generate(model, prompt_ids, n: int, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
             context: int | None = None) -> np.ndarray:
    """Continue ``prompt_ids`` by ``n`` tokens, one at a time (no cache: every step reruns the window).

    Each step feeds the last ``context`` tokens to ``model``, takes the logits at the last
    position, turns them into :func:`next_token_probabilities` and draws from them with a
    NumPy generator seeded by ``seed`` (``temperature=0``: greedy, no randomness).

    Parameters
    ----------
    model : callable
        ``model(ids (1, T)) -> logits (1, T, V)``, e.g. from :func:`build_language_model`.
    prompt_ids : int array, shape (P,), P >= 1
    n : int
        Tokens to generate.
    temperature, top_k
        As in :func:`next_token_probabilities`.
    seed : int, default 0
    context : int, optional
        Longest window given to the model (its number of positions); ``None``: everything.
        With a ``context``, a Keras model always reads ``context`` positions (the tokens, then
        0s that the causal mask keeps out of their logits), through ``predict_on_batch``.

    Returns
    -------
    ndarray, shape (n,), int32: the new token ids (the prompt not included).
    """
    ids = [int(i) for i in np.asarray(prompt_ids).reshape(-1)]
    if np.asarray(prompt_ids).ndim != 1 or not ids:
        raise ValueError(f"`prompt_ids` must be a non-empty 1-D array of ids; got shape {np.shape(prompt_ids)}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"`n` must be a non-negative integer; got {n!r}.")
    if context is not None:
        context = _positive_int(context, "context")
    rng = np.random.default_rng(seed)
    # A Keras model with a known context gets windows of one fixed shape (1, context): the
    # tokens, then 0s that causal attention hides from them. One shape means one compiled
    # graph for `predict_on_batch`, much faster than an eager call per step.
    fixed = context is not None and hasattr(model, "predict_on_batch")
    new = []
    for _ in range(n):
        window = np.asarray(ids[-context:] if context else ids, dtype=np.int32)          # (T,)
        if fixed:
            padded = np.zeros((1, context), dtype=np.int32)                               # (1, context)
            padded[0, :len(window)] = window
            logits = np.asarray(model.predict_on_batch(padded))[0, len(window) - 1]      # (V,) last real position
        else:
            logits = np.asarray(model(window[None], training=False))[0, -1]              # (V,) last position
        probs = next_token_probabilities(logits, temperature, top_k)
        token = int(np.argmax(probs)) if temperature == 0 else sample_token(probs, rng)
        ids.append(token)
        new.append(token)
    return np.asarray(new, dtype=np.int32)


# --------------------------------------------------------------------------- evaluation
def cross_entropy(logits, targets) -> float:
    """Mean ``-log softmax(logits)[target]`` in nats (float64): ``logits (..., V)``, ``targets (...)``."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"`logits` {logits.shape} must be `targets` {targets.shape} plus a token axis.")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=-1))                                           # (...)
    picked = np.take_along_axis(shifted, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    return float(np.mean(log_z - picked))


def model_cross_entropy(model, ids, context: int, batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per token) of ``model`` on tokens ``ids[1:]``.

    The text is cut into consecutive windows of ``context`` inputs: window ``w`` reads
    ``ids[w*context : (w+1)*context]`` and predicts each next token, so every token after the
    first is scored exactly once — with between 1 and ``context`` tokens of history.
    """
    ids = np.asarray(ids, dtype=np.int32)
    context = _positive_int(context, "context")
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"`ids` must be 1-D with at least 2 tokens; got shape {ids.shape}.")
    n_full = (len(ids) - 1) // context
    total, count = 0.0, 0
    inputs = ids[:n_full * context].reshape(n_full, context)                    # (W, context)
    targets = ids[1:n_full * context + 1].reshape(n_full, context)              # (W, context)
    for start in range(0, n_full, batch_size):
        logits = np.asarray(model(inputs[start:start + batch_size], training=False))   # (b, context, V)
        total += cross_entropy(logits, targets[start:start + batch_size]) * targets[start:start + batch_size].size
        count += targets[start:start + batch_size].size
    rest = len(ids) - 1 - n_full * context                                      # a last, shorter window
    if rest:
        logits = np.asarray(model(ids[n_full * context:-1][None], training=False))     # (1, rest, V)
        total += cross_entropy(logits, ids[n_full * context + 1:][None]) * rest
        count += rest
    return total / count


def ngram_cross_entropy(train_ids, test_ids, n: int, vocab_size: int, alpha: float = 1.0) -> float:
    """Cross-entropy (nats per token) of an add-α smoothed n-gram model on ``test_ids[1:]``.

    ``p(w | h) = (count(h, w) + α) / (count(h) + α V)``, with ``h`` the ``n - 1`` tokens
    before ``w`` counted in ``train_ids`` (``n = 1``: no history, unigram frequencies;
    ``n = 2``: the bigram model). Histories that reach before the start of a text are
    padded with id 0, so that, like :func:`model_cross_entropy`, every token after the
    first is scored.
    """
    n, vocab_size = _positive_int(n, "n"), _positive_int(vocab_size, "vocab_size")
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0 (else unseen n-grams get probability 0); got {alpha!r}.")
    if vocab_size ** n >= 2 ** 62:
        raise ValueError(f"`vocab_size`**`n` = {vocab_size}**{n} is too large to index the n-grams.")
    arrays = []
    for name, ids in (("train_ids", train_ids), ("test_ids", test_ids)):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or len(ids) < 2 or ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"`{name}` must be 1-D ids in 0..{vocab_size - 1} with at least 2 tokens; "
                             f"got shape {ids.shape}.")
        arrays.append(ids)

    def keys(ids):                     # (history key, n-gram key) of every token after the first
        padded = np.concatenate([np.zeros(n - 1, np.int64), ids])
        history = np.zeros(len(ids) - 1, np.int64)
        for j in range(n - 1):                                 # base-V number of the n-1 previous ids
            history = history * vocab_size + padded[1 + j:len(ids) + j]
        return history, history * vocab_size + ids[1:]

    def counts(table, queries):        # how often each query occurs in table
        values, freq = np.unique(table, return_counts=True)
        where = np.clip(np.searchsorted(values, queries), 0, len(values) - 1)
        return np.where(values[where] == queries, freq[where], 0)

    train_h, train_g = keys(arrays[0])
    test_h, test_g = keys(arrays[1])
    p = (counts(train_g, test_g) + alpha) / (counts(train_h, test_h) + alpha * vocab_size)
    return float(-np.mean(np.log(p)))
