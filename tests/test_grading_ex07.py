"""ex07: the student's trained model is saved in their kernel and judged here, on sentences it never saw."""

import numpy as np
import pytest

from attention_lessons.device import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402

from attention_lessons import data, layers  # noqa: E402
from attention_lessons.grading import evaluate  # noqa: E402
from attention_lessons.grading import ex07  # noqa: E402

DS = data.sentiment(seed=0)
VOCAB, LENGTH = len(DS.vocab), DS.info["max_length"]


def _compiled(ids, out):
    model = keras.Model(ids, out)
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    return model


def _attention_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32")
    x = layers.PositionalEmbedding(VOCAB, LENGTH, 32, mask_zero=True)(ids)
    x = layers.TransformerEncoderBlock(32, 2, 64, dropout=0.0)(x)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
    return _compiled(ids, keras.layers.Dense(1, activation="sigmoid")(x))


def _bag_model():
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 32, mask_zero=True)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    return _compiled(ids, keras.layers.Dense(1, activation="sigmoid")(x))


def _checks(model):
    result = evaluate("ex07.q1", model=model)
    return {c.name: c for c in result.checks}, result


@pytest.fixture(scope="module")
def trained():
    tf.config.experimental.enable_op_determinism()
    model = _attention_model()
    model.fit(DS.train.x, DS.train.y, epochs=4, batch_size=64, verbose=0)
    return model


def test_a_trained_attention_model_scores_full_marks(trained):
    _, result = _checks(trained)
    assert result.earned == result.points == 8, result.report()


def test_a_bag_of_words_model_fails_on_contrasts_with_the_word_order_hint():
    model = _bag_model()
    model.fit(DS.train.x, DS.train.y, epochs=6, batch_size=64, verbose=0)
    checks, result = _checks(model)
    assert result.earned == 1  # it reloads, and nothing else
    assert "no attention layer" in checks["the model uses attention"].detail
    accuracy = next(c for name, c in checks.items() if name.startswith("accuracy ≥ 90%"))
    assert not accuracy.passed and "ignores word order" in accuracy.hint


def test_an_untrained_model_loses_the_accuracy_points():
    checks, result = _checks(_attention_model())
    assert result.earned == 2, result.report()
    assert not any(c.passed for name, c in checks.items() if name.startswith("accuracy"))


def test_a_lambda_layer_is_refused_by_safe_mode_with_a_hint():
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, 8)(ids)
    x = keras.layers.Lambda(lambda t: keras.ops.mean(t, axis=1))(x)
    checks, result = _checks(_compiled(ids, keras.layers.Dense(1, activation="sigmoid")(x)))
    assert result.earned == 0
    assert "Lambda" in checks["the saved model reloads and maps token ids to P(positive)"].hint


class NotebookPooling(keras.layers.Layer):  # stands for a class written in the student's notebook
    def call(self, x):
        return keras.ops.mean(x, axis=1)


def test_a_class_the_grader_cannot_rebuild_is_refused_with_a_hint():
    ids = keras.Input((LENGTH,), dtype="int32")
    x = NotebookPooling()(keras.layers.Embedding(VOCAB, 8)(ids))
    checks, result = _checks(_compiled(ids, keras.layers.Dense(1, activation="sigmoid")(x)))
    assert result.earned == 0
    assert "class defined in your notebook" in checks["the saved model reloads and maps token ids to P(positive)"].hint


def test_logits_instead_of_probabilities_are_refused_with_the_sigmoid_hint(trained):
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 8)(ids))
    model = _compiled(ids, keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="ones")(x))
    checks, _ = _checks(model)
    first = checks["the saved model reloads and maps token ids to P(positive)"]
    assert not first.passed and "sigmoid" in first.hint and "not probabilities" in first.detail


def test_a_model_over_the_weight_limit_is_refused():
    ids = keras.Input((LENGTH,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(VOCAB, 8)(ids))
    x = keras.layers.Dense(1200, activation="relu")(keras.layers.Dense(1000)(x))
    checks, result = _checks(_compiled(ids, keras.layers.Dense(1, activation="sigmoid")(x)))
    assert result.earned == 0
    assert "the limit is 1,000,000" in checks["the saved model reloads and maps token ids to P(positive)"].detail


def test_something_that_is_not_a_model_is_reported():
    checks, result = _checks(lambda x: x)
    assert result.earned == 0
    assert "keras.Model" in checks["the saved model reloads and maps token ids to P(positive)"].detail


def test_the_graders_sentences_leave_out_the_training_split_and_depend_on_its_seed():
    a, b = ex07._test_set(11), ex07._test_set(12)
    seen = set(DS.train.extras["text"]) | set(DS.val.extras["text"])
    assert len(a) == ex07.TEST_SIZE and not seen & set(a.extras["text"])
    assert a.extras["text"] != b.extras["text"]
    assert 0.3 < a.extras["contrast"].mean() < 0.7
