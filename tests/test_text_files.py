"""attention_lessons.data.write_sentiment_files: the sentiment task as raw text files (lesson 16)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attention_lessons import data

SIZES = dict(n_train=30, n_val=10, n_test=20, seed=5)


def read_folder(split_folder: Path) -> dict:
    """{(class name, file name): text} of every .txt file below one split's folder."""
    return {(p.parent.name, p.name): p.read_text(encoding="utf-8") for p in sorted(split_folder.rglob("*.txt"))}


def test_layout_is_one_folder_per_split_and_class(tmp_path):
    out = data.write_sentiment_files(tmp_path, **SIZES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "train", "val"]
    for split in ("train", "val", "test"):
        assert out.paths[split] == tmp_path / split
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == ["neg", "pos"]
    assert out.root == tmp_path


def test_counts_match_the_files_written_and_the_requested_sizes(tmp_path):
    out = data.write_sentiment_files(tmp_path, **SIZES)
    for split, n in (("train", 30), ("val", 10), ("test", 20)):
        on_disk = {label: len(list((tmp_path / split / label).glob("*.txt"))) for label in ("neg", "pos")}
        assert on_disk == out.counts[split]
        assert sum(on_disk.values()) == n


def test_files_hold_the_sentences_and_labels_of_sentiment(tmp_path):
    data.write_sentiment_files(tmp_path, **SIZES)
    ds = data.sentiment(**SIZES)
    for split in ("train", "val", "test"):
        arrays = getattr(ds, split)
        expected = {(data.SENTIMENT_CLASSES[y], f"{i:05d}.txt"): text + "\n"
                    for i, (text, y) in enumerate(zip(arrays.extras["text"], arrays.y.tolist()))}
        assert read_folder(tmp_path / split) == expected


def test_every_file_sits_in_the_folder_of_its_grammar_label(tmp_path):
    data.write_sentiment_files(tmp_path, n_train=200, n_val=0, n_test=0, seed=1)
    files = read_folder(tmp_path / "train")
    wrong = [(label, name) for (label, name), text in files.items()
             if data.SENTIMENT_CLASSES[data.sentiment_label(text.split())] != label]
    assert not wrong
    assert {label for label, _ in files} == {"neg", "pos"}, "both classes occur in 200 sentences"


def test_class_folder_names_sort_into_the_label_ids():
    # text_dataset_from_directory numbers classes by their sorted folder names
    assert sorted(data.SENTIMENT_CLASSES) == list(data.SENTIMENT_CLASSES)
    assert data.SENTIMENT_CLASSES.index("pos") == 1


def test_same_arguments_write_identical_files_and_another_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((a, 5), (b, 5), (c, 6)):
        folder.mkdir()
        data.write_sentiment_files(folder, **{**SIZES, "seed": seed})
    assert read_folder(a / "train") == read_folder(b / "train")
    assert read_folder(a / "train") != read_folder(c / "train")


def test_splits_written_to_disk_are_disjoint(tmp_path):
    data.write_sentiment_files(tmp_path, n_train=300, n_val=100, n_test=200, seed=0)
    texts = {split: set(read_folder(tmp_path / split).values()) for split in ("train", "val", "test")}
    assert len(texts["train"]) == 300
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"]


def test_accepts_a_string_path(tmp_path):
    out = data.write_sentiment_files(str(tmp_path), n_train=4, n_val=2, n_test=2)
    assert out.root == tmp_path and sum(out.counts["train"].values()) == 4


def test_zero_sized_splits_leave_empty_class_folders(tmp_path):
    out = data.write_sentiment_files(tmp_path, n_train=6, n_val=0, n_test=0)
    assert out.counts["val"] == {"neg": 0, "pos": 0}
    assert (tmp_path / "val" / "neg").is_dir() and not list((tmp_path / "val").rglob("*.txt"))


def test_refuses_a_folder_that_already_holds_a_split(tmp_path):
    data.write_sentiment_files(tmp_path, n_train=4, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="`folder` already holds"):
        data.write_sentiment_files(tmp_path, n_train=4, n_val=2, n_test=2)


def test_refuses_a_folder_that_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match="`folder` must be an existing folder"):
        data.write_sentiment_files(tmp_path / "missing", n_train=4)


def test_refuses_a_file_instead_of_a_folder(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="`folder` must be an existing folder"):
        data.write_sentiment_files(path, n_train=4)


def test_refuses_something_that_is_not_a_path(tmp_path):
    with pytest.raises(ValueError, match="`folder` must be a path"):
        data.write_sentiment_files(3, n_train=4)


@pytest.mark.parametrize("kwargs, name", [({"n_train": -1}, "n_train"), ({"n_val": 2.5}, "n_val"),
                                          ({"seed": "0"}, "seed"), ({"contrast_fraction": 2.0}, "contrast_fraction")])
def test_invalid_sizes_are_rejected_before_anything_is_written(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        data.write_sentiment_files(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir()), "nothing may be written when the arguments are invalid"


def test_data_module_still_imports_without_tensorflow():
    code = ("import sys; import attention_lessons.data as d; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print(d.write_sentiment_files)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_text_dataset_from_directory_reads_the_labels_back(tmp_path):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    out = data.write_sentiment_files(tmp_path, n_train=40, n_val=0, n_test=0, seed=2)
    dataset = keras.utils.text_dataset_from_directory(out.paths["train"], batch_size=8, shuffle=False)
    assert dataset.class_names == ["neg", "pos"]
    pairs = [(t.decode().split(), int(y)) for x, y in dataset for t, y in zip(x.numpy(), y.numpy())]
    assert len(pairs) == 40
    np.testing.assert_array_equal([y for _, y in pairs], [data.sentiment_label(words) for words, _ in pairs])
    del tf
