"""attention_lessons.language_model: the decoder-only model, sampling and n-gram baselines."""

import numpy as np
import pytest

from attention_lessons.device import set_seed
from attention_lessons.language_model import (build_language_model, cross_entropy, generate, model_cross_entropy,
                                              next_token_probabilities, ngram_cross_entropy, sample_token)

LOGITS = np.log(np.array([0.5, 0.25, 0.125, 0.125]))


@pytest.fixture(scope="module")
def tiny():
    set_seed(0, tensorflow=True)
    return build_language_model(vocab_size=7, context=8, embed_dim=8, num_heads=2, ff_dim=16, num_layers=2)


# --------------------------------------------------------------------------- sampling
def test_temperature_one_recovers_the_softmax():
    np.testing.assert_allclose(next_token_probabilities(LOGITS), [0.5, 0.25, 0.125, 0.125], rtol=1e-12)


def test_temperature_two_takes_the_square_root_of_the_probabilities_and_renormalises():
    root = np.sqrt([0.5, 0.25, 0.125, 0.125])
    np.testing.assert_allclose(next_token_probabilities(LOGITS, temperature=2.0), root / root.sum(), rtol=1e-12)


def test_temperature_zero_is_greedy_and_breaks_ties_towards_the_smaller_id():
    np.testing.assert_array_equal(next_token_probabilities(LOGITS, temperature=0), [1, 0, 0, 0])
    np.testing.assert_array_equal(next_token_probabilities([1.0, 3.0, 3.0], temperature=0), [0, 1, 0])


def test_top_k_keeps_the_k_largest_and_renormalises():
    np.testing.assert_allclose(next_token_probabilities(LOGITS, top_k=2), [2 / 3, 1 / 3, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(next_token_probabilities(LOGITS, top_k=1), [1, 0, 0, 0])


def test_top_k_works_row_by_row_on_a_batch():
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    probs = next_token_probabilities(logits, top_k=1)
    np.testing.assert_array_equal(probs, [[0, 0, 1], [1, 0, 0]])


@pytest.mark.parametrize("kwargs, word", [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"),
                                          ({"top_k": 5}, "top_k"), ({"top_k": 2.5}, "top_k")])
def test_bad_sampling_arguments_raise_value_error_naming_them(kwargs, word):
    with pytest.raises(ValueError, match=word):
        next_token_probabilities(LOGITS, **kwargs)


def test_sample_token_inverts_the_cumulative_distribution():
    p = np.array([0.5, 0.25, 0.125, 0.125])
    for seed in range(20):                               # one uniform number u per draw: token = #{cumsum <= u}
        u = np.random.default_rng(seed).random()
        assert sample_token(p, np.random.default_rng(seed)) == int(np.searchsorted(np.cumsum(p), u, side="right"))
    rng = np.random.default_rng(0)
    draws = np.bincount([sample_token(p, rng) for _ in range(20_000)], minlength=4) / 20_000
    np.testing.assert_allclose(draws, p, atol=0.015)   # ~4 standard errors of a frequency near 0.5


def test_sample_token_never_draws_a_zero_probability_token():
    rng = np.random.default_rng(1)
    assert {sample_token(np.array([0.0, 0.7, 0.0, 0.3]), rng) for _ in range(500)} == {1, 3}


# --------------------------------------------------------------------------- the model
def test_logits_at_a_position_do_not_depend_on_later_tokens(tiny):
    model, _ = tiny
    ids = np.array([[2, 3, 4, 5, 6, 1, 0, 2]], dtype=np.int32)
    other = ids.copy()
    other[0, 4:] = [0, 0, 6, 6]
    np.testing.assert_allclose(model(ids)[0, :4], model(other)[0, :4], rtol=1e-5, atol=1e-6)   # float32 rounding
    assert not np.allclose(model(ids)[0, 4:], model(other)[0, 4:])


def test_attention_probe_gives_causal_weights_for_every_block(tiny):
    _, probe = tiny
    scores = probe(np.arange(8, dtype=np.int32)[None] % 7)
    assert len(scores) == 2
    for s in scores:
        s = np.asarray(s)
        assert s.shape == (1, 2, 8, 8)
        assert np.all(np.triu(s, k=1) == 0)
        np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-5)


def test_parameter_count_matches_the_formula():
    model, _ = build_language_model(vocab_size=10, context=6, embed_dim=8, num_heads=2, ff_dim=12, num_layers=3)
    V, T, E, F = 10, 6, 8, 12
    block = 4 * (E * E + E) + 2 * 2 * E + (E * F + F) + (F * E + E)
    assert model.count_params() == V * E + T * E + 3 * block + 2 * E + E * V + V


def test_generate_is_reproducible_for_a_seed_and_greedy_ignores_the_seed(tiny):
    model, _ = tiny
    prompt = np.array([2, 3], dtype=np.int32)
    a = generate(model, prompt, 12, temperature=1.0, seed=5, context=8)
    b = generate(model, prompt, 12, temperature=1.0, seed=5, context=8)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (12,) and a.dtype == np.int32 and a.min() >= 0 and a.max() < 7
    np.testing.assert_array_equal(generate(model, prompt, 12, temperature=0, seed=1, context=8),
                                  generate(model, prompt, 12, temperature=0, seed=2, context=8))


def test_greedy_generation_takes_the_argmax_of_the_model_at_every_step(tiny):
    model, _ = tiny
    ids = [2, 3, 4]
    new = generate(model, np.array(ids), 10, temperature=0, context=8)
    for token in new:
        logits = np.asarray(model(np.array([ids[-8:]], dtype=np.int32)))[0, -1]
        assert token == int(np.argmax(logits))
        ids.append(int(token))


def test_top_k_generation_only_draws_among_the_k_most_likely(tiny):
    model, _ = tiny
    ids = [2, 3]
    new = generate(model, np.array(ids), 10, temperature=1.5, top_k=2, seed=0, context=8)
    for token in new:
        logits = np.asarray(model(np.array([ids[-8:]], dtype=np.int32)))[0, -1]
        assert token in np.argsort(-logits)[:2]
        ids.append(int(token))


def test_generate_rejects_an_empty_prompt(tiny):
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(tiny[0], np.array([], dtype=np.int32), 3)


# --------------------------------------------------------------------------- evaluation
def test_cross_entropy_of_a_hand_computed_case():
    assert cross_entropy(LOGITS[None], np.array([1])) == pytest.approx(np.log(4), rel=1e-12)
    assert cross_entropy(np.zeros((2, 3, 5)), np.zeros((2, 3), int)) == pytest.approx(np.log(5), rel=1e-12)


def test_model_cross_entropy_scores_every_token_after_the_first_once(tiny):
    model, _ = tiny
    ids = np.random.default_rng(0).integers(0, 7, size=21).astype(np.int32)   # 20 targets: 2 windows of 8 + 4
    logits = [np.asarray(model(ids[s:e][None]))[0] for s, e in ((0, 8), (8, 16), (16, 20))]
    expected = cross_entropy(np.concatenate(logits), ids[1:])
    assert model_cross_entropy(model, ids, context=8, batch_size=1) == pytest.approx(expected, rel=1e-6)


def test_bigram_cross_entropy_equals_the_add_alpha_table_by_hand():
    train = np.array([0, 1, 1, 2, 0, 1])
    test = np.array([1, 2, 2, 0])
    counts = np.zeros((3, 3))
    for a, b in zip([0, *train[:-1]], train):     # the first token's history is the padding id 0
        counts[a, b] += 1
    counts[0, train[0]] -= 1                       # ... but the first token itself is not scored
    p = (counts + 0.5) / (counts.sum(1, keepdims=True) + 0.5 * 3)
    expected = -np.mean(np.log([p[1, 2], p[2, 2], p[2, 0]]))
    assert ngram_cross_entropy(train, test, n=2, vocab_size=3, alpha=0.5) == pytest.approx(expected, rel=1e-12)


def test_unigram_cross_entropy_uses_token_frequencies():
    train = np.array([0, 1, 1, 1, 2])                 # scored tokens 1, 1, 1, 2
    expected = -np.log((3 + 1) / (4 + 3))
    assert ngram_cross_entropy(train, np.array([2, 1]), n=1, vocab_size=3) == pytest.approx(expected, rel=1e-12)


def test_longer_ngrams_fit_repetitive_text_better():
    text = np.tile(np.array([0, 1, 2, 3, 1, 0, 3, 2]), 50)
    h = [ngram_cross_entropy(text, text[:80], n, 4, alpha=0.01) for n in (1, 2, 3)]
    assert h[0] > h[1] > h[2]


@pytest.mark.parametrize("kwargs, word", [({"alpha": 0.0}, "alpha"), ({"n": 0}, "n"),
                                          ({"test_ids": np.array([0, 9])}, "test_ids")])
def test_bad_ngram_arguments_raise_value_error_naming_them(kwargs, word):
    args = {"train_ids": np.array([0, 1, 2]), "test_ids": np.array([1, 2]), "n": 2, "vocab_size": 3, **kwargs}
    with pytest.raises(ValueError, match=word):
        ngram_cross_entropy(**args)
