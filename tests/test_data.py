"""attention_lessons.data: deterministic tasks with disjoint splits and honest labels."""

import datetime as dt

import numpy as np
import pytest

from attention_lessons import data


def test_sentiment_is_identical_for_the_same_seed_and_differs_for_another():
    a, b, c = data.sentiment(seed=3), data.sentiment(seed=3), data.sentiment(seed=4)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.train.x, c.train.x)


def test_sentiment_test_sentences_never_occur_in_training():
    ds = data.sentiment()
    train = set(ds.train.extras["text"])
    assert not train & set(ds.test.extras["text"])
    assert not train & set(ds.val.extras["text"])


@pytest.mark.parametrize("text, label", [
    ("the movie was good", 1), ("the movie was not good", 0), ("the plot was not really dull", 1),
    ("the cast was good but boring", 0), ("the cast was boring but good", 1),
    ("honestly the film was not good but fun", 1), ("i think the film was fun but not good", 0),
])
def test_sentiment_labels_follow_the_documented_grammar(text, label):
    assert data.sentiment_label(text.split()) == label


def test_every_sentiment_label_matches_its_text_and_encoding():
    ds = data.sentiment(n_train=500, n_val=0, n_test=0)
    for ids, y, text in zip(ds.train.x, ds.train.y, ds.train.extras["text"]):
        assert ds.vocab.decode(ids, stop_at=None) == text.split()
        assert data.sentiment_label(text.split()) == y


def test_contrast_sentences_have_bag_of_words_twins_with_the_opposite_label():
    ds = data.sentiment(n_train=2000, n_val=0, n_test=0)
    texts, twins = ds.train.extras["text"], ds.train.extras["bag_twin"]
    assert twins[ds.train.extras["contrast"]].all() and not twins[~ds.train.extras["contrast"]].any()
    words = texts[int(np.argmax(ds.train.extras["contrast"]))].split()
    i = words.index("but")
    head = next(k for k in range(i) if words[k] == "was") + 1
    swapped = words[:head] + words[i + 1:] + ["but"] + words[head:i]
    assert sorted(swapped) == sorted(words)
    assert data.sentiment_label(swapped) != data.sentiment_label(words)


def test_sentiment_splits_have_the_requested_sizes_and_contrast_fraction():
    ds = data.sentiment(n_train=400, n_val=100, n_test=200, contrast_fraction=0.25)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (400, 100, 200)
    assert ds.train.extras["contrast"].mean() == 0.25
    assert ds.train.x.shape == (400, 12) and ds.train.x.dtype == np.int32


def test_sentiment_refuses_more_plain_sentences_than_the_grammar_has():
    with pytest.raises(ValueError, match="plain sentences"):
        data.sentiment(n_train=20000, n_val=0, n_test=0, contrast_fraction=0.0)


def test_dates_targets_are_the_iso_form_of_the_source():
    ds = data.dates(n_train=300, n_val=50, n_test=100, seed=1)
    for split in (ds.train, ds.test):
        for x, y, source, iso, fmt in zip(split.x, split.y, split.extras["source"], split.extras["iso"],
                                          split.extras["format"]):
            assert "".join(ds.vocab.decode(x, stop_at=None)) == source
            assert "".join(ds.target_vocab.decode(y)) == iso
            assert data.format_date(dt.date.fromisoformat(iso), fmt) == source
        assert (split.y[:, 0] == ds.target_vocab.id("<start>")).all()
        assert (split.y[:, -1] == ds.target_vocab.id("<end>")).all()


def test_dates_test_days_never_occur_in_training():
    ds = data.dates()
    assert not set(ds.train.extras["iso"]) & set(ds.test.extras["iso"])


@pytest.mark.parametrize("fmt, expected", list(data.DATE_FORMATS.items()))
def test_date_formats_write_the_documented_example(fmt, expected):
    assert data.format_date(dt.date(2026, 11, 22), fmt) == expected


def test_unknown_date_format_is_named_in_the_error():
    with pytest.raises(ValueError, match="'d-m-y'"):
        data.dates(formats=["d-m-y"])


def test_patchify_cuts_row_by_row():
    image = np.arange(16).reshape(1, 4, 4)
    patches = data.patchify(image, 2)
    np.testing.assert_array_equal(patches[0, 0], [0, 1, 4, 5])
    np.testing.assert_array_equal(patches[0, 1], [2, 3, 6, 7])
    np.testing.assert_array_equal(patches[0, 3], [10, 11, 14, 15])


def test_patchify_rejects_a_patch_size_that_does_not_divide_the_image():
    with pytest.raises(ValueError, match="patch_size"):
        data.patchify(np.zeros((2, 8, 8)), 3)


def test_digits_splits_are_disjoint_stratified_and_scaled():
    ds = data.digits(patch_size=4)
    assert ds.train.x.shape[1:] == (4, 16)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    counts = np.bincount(ds.test.y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    rows = {img.tobytes() for img in ds.train.extras["images"]}
    assert sum(img.tobytes() in rows for img in ds.test.extras["images"]) <= 2  # the digits set has a few duplicates


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_copy_reverse_targets(task):
    ds = data.copy_reverse(task, n_train=50, n_val=5, n_test=20, length=6, vocab_size=5)
    expected = ds.test.x if task == "copy" else ds.test.x[:, ::-1]
    np.testing.assert_array_equal(ds.test.y, expected)
    assert ds.train.x.min() >= 2 and ds.train.x.max() <= 6
    assert not {r.tobytes() for r in ds.train.x} & {r.tobytes() for r in ds.test.x}


def test_regression_toy_is_noisy_around_the_documented_function():
    ds = data.regression_toy(n_train=2000, noise=0.5)
    residual = ds.train.y - (2 * np.sin(ds.train.x) + ds.train.x ** 0.8)
    assert abs(residual.std() - 0.5) < 0.03


def test_vocabulary_encodes_pads_and_refuses_overflow():
    vocab = data.Vocabulary(["a", "b"])
    np.testing.assert_array_equal(vocab.encode(["b", "zzz"], 4), [3, 1, 0, 0])
    with pytest.raises(ValueError, match="length"):
        vocab.encode(["a"] * 5, 4)


def test_split_subset_keeps_extras_aligned():
    ds = data.sentiment(n_train=100, n_val=0, n_test=0)
    sub = ds.train.subset(ds.train.extras["negated"])
    assert all("not" in t.split() for t in sub.extras["text"])
    assert len(sub.x) == len(sub.extras["text"]) == int(ds.train.extras["negated"].sum())
