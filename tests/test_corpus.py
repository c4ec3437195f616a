"""attention_lessons.data.text_corpus / char_vocabulary: an offline, deterministic character corpus."""

import numpy as np
import pytest

from attention_lessons import data


@pytest.fixture(scope="module")
def corpus():
    return data.text_corpus()


def test_char_vocabulary_is_newline_and_printable_ascii_after_the_two_specials():
    vocab = data.char_vocabulary()
    assert len(vocab) == 98
    assert vocab.itos[:4] == ["<pad>", "<unk>", "\n", " "]
    assert vocab.id("A") == 2 + ord("A") - 31 and vocab.itos[-1] == "~"


def test_split_sizes_follow_the_arguments(corpus):
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (360_000, 20_000, 20_000)
    small = data.text_corpus(max_chars=50_000, chunk_chars=500, val_chunks=4, test_chunks=6)
    assert (len(small.train), len(small.val), len(small.test)) == (45_000, 2_000, 3_000)


def test_corpus_is_identical_for_the_same_seed_and_holds_out_other_chunks_for_another(corpus):
    again, other = data.text_corpus(seed=0), data.text_corpus(seed=1)
    assert (again.train, again.val, again.test) == (corpus.train, corpus.val, corpus.test)
    assert other.test != corpus.test


def test_held_out_chunks_never_overlap_training(corpus):
    chunk, chunks = corpus.info["chunk_chars"], corpus.info["chunks"]
    text = "\n".join(corpus.documents.values())
    for split in ("train", "val", "test"):       # each split is its chunks of the full text, in text order
        assert getattr(corpus, split) == "".join(text[i * chunk:(i + 1) * chunk] for i in chunks[split])
    assert not set(chunks["train"]) & set(chunks["val"]) and not set(chunks["train"]) & set(chunks["test"])
    assert not set(chunks["val"]) & set(chunks["test"])


def test_text_uses_only_the_vocabulary_characters(corpus):
    allowed = set(data.CORPUS_CHARACTERS)
    assert set(corpus.train) | set(corpus.val) | set(corpus.test) <= allowed
    ids = corpus.ids("val")
    assert ids.dtype == np.int32 and ids.min() >= 2 and ids.max() <= 97
    assert "".join(corpus.vocab.decode(ids, stop_at=None)) == corpus.val


def test_typographic_quotes_and_dashes_become_ascii():
    assert data._to_corpus_characters("\u201cit\u2019s\u201d \u2014 a\u2026\u00e9") == "\"it's\" -- a..."


def test_documents_are_the_pydoc_topics_in_name_order(corpus):
    from pydoc_data.topics import topics

    assert list(corpus.documents) == sorted(topics)
    assert corpus.documents["assert"].startswith('The "assert" statement\n')
    assert corpus.info["n_documents"] == len(topics)


@pytest.mark.parametrize("kwargs, word", [
    ({"name": "shakespeare"}, "name"),
    ({"max_chars": -1}, "max_chars"),
    ({"chunk_chars": 0}, "chunk_chars"),
    ({"val_chunks": 300, "test_chunks": 300}, "val_chunks"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, word):
    with pytest.raises(ValueError, match=word):
        data.text_corpus(**kwargs)


def test_ids_rejects_an_unknown_split(corpus):
    with pytest.raises(ValueError, match="split"):
        corpus.ids("validation")
