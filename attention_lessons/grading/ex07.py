"""Exercise 07 · Train a model with attention: a sentiment classifier judged on sentences it never saw.

The student trains ``model`` (a ``keras.Model``) on ``data.sentiment(seed=0)``. Grading saves
it as a ``.keras`` file inside the student's kernel (driver ``keras_model_file``), and only
the file's bytes come back. Here, in the grader's process, the file is loaded with Keras's
safe mode (no Lambda code, only Keras's and the course's registered layers) and evaluated on
a test set drawn with the grader's own seed, with the sentences of the student's training
and validation splits left out, under a time limit.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time

import numpy as np

from .spec import Case, Check, Exercise, Question

MAX_PARAMS = 1_000_000
TEST_SIZE = 2000
EVAL_SECONDS = 60.0
TARGET = 0.90
CONTRAST_TARGET = 0.85
ATTENTION_CLASSES = ("MultiHeadAttention", "Attention", "AdditiveAttention", "GroupedQueryAttention")

class Unusable(Exception):
    """The saved model cannot be loaded or run; the message says why, the hint what to do."""

    def __init__(self, detail: str, hint: str):
        super().__init__(detail)
        self.detail, self.hint = detail, hint


def _keras():
    from ..device import import_tensorflow

    import_tensorflow()
    import keras

    from .. import layers  # noqa: F401 - registers the course's layers for loading

    return keras


def _load(blob: bytes):
    keras = _keras()
    with tempfile.TemporaryDirectory(prefix="al-ex07-") as folder:
        path = os.path.join(folder, "model.keras")
        with open(path, "wb") as f:
            f.write(blob)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is the submission's
            text = f"{type(exc).__name__}: {exc}"
            if "Lambda" in text or "safe_mode" in text:
                hint = ("A Lambda layer holds Python code that the grader does not run. Use Keras layers "
                        "(e.g. GlobalAveragePooling1D) or the course's layers instead.")
            elif "locate" in text or "Unknown" in text or "custom" in text.lower():
                hint = ("Your model uses a class defined in your notebook, which the grader cannot rebuild. "
                        "Build it from keras.layers and attention_lessons.layers (PositionalEmbedding, "
                        "TransformerEncoderBlock, MultiHeadAttention).")
            else:
                hint = "Check that `model.save('model.keras')` and `keras.saving.load_model('model.keras')` work."
            raise Unusable(f"the saved model could not be loaded: {text}"[:400], hint) from None
    params = model.count_params()
    if params > MAX_PARAMS:
        raise Unusable(f"the model has {params:,} weights; the limit is {MAX_PARAMS:,}.",
                       "A few tens of thousands of weights are enough for this task: shrink embed_dim/ff_dim.")
    return model


def _layer_names(model) -> set[str]:
    """Class names of ``model`` and every layer nested in it (blocks hold their attention layers)."""
    return {type(layer).__name__ for layer in model._flatten_layers(include_self=True, recursive=True)}


def _predict(model, x: np.ndarray, deadline: float) -> np.ndarray:
    """Predicted labels (0/1) for token ids ``x``; raises :class:`Unusable` on odd outputs or time out."""
    labels = []
    for start in range(0, len(x), 250):
        if time.monotonic() > deadline:
            raise Unusable(f"evaluating {len(x)} sentences took more than {EVAL_SECONDS:g} s.",
                           "Make the model smaller: it should classify 2000 sentences in a few seconds on a CPU.")
        out = np.asarray(model(x[start:start + 250], training=False), dtype=np.float64)
        n = len(x[start:start + 250])
        if out.shape in ((n,), (n, 1)):
            p = out.reshape(n)
            if np.isnan(p).any() or p.min() < 0 or p.max() > 1:
                raise Unusable(f"the model's outputs have shape {out.shape} but are not probabilities "
                               f"(range {np.nanmin(p):.3g} … {np.nanmax(p):.3g}).",
                               "End with Dense(1, activation='sigmoid') so the output is P(positive).")
            labels.append((p > 0.5).astype(int))
        elif out.shape == (n, 2):
            labels.append(np.argmax(out, axis=-1))
        else:
            raise Unusable(f"for input of shape {x[start:start + 250].shape} the model returned shape {out.shape}.",
                           "The model must map (batch, 12) token ids to (batch, 1) probabilities of 'positive' "
                           "(or (batch, 2) class scores).")
    return np.concatenate(labels) if labels else np.zeros(0, int)


@functools.lru_cache(maxsize=1)
def _seen_sentences() -> frozenset:
    """The sentences of the students' default training and validation splits."""
    from .. import data

    default = data.sentiment(seed=0)
    return frozenset(default.train.extras["text"]) | frozenset(default.val.extras["text"])


def _test_set(seed: int):
    from .. import data

    fresh = data.sentiment(n_train=0, n_val=0, n_test=3000, seed=seed).test
    keep = [i for i, t in enumerate(fresh.extras["text"]) if t not in _seen_sentences()][:TEST_SIZE]
    return fresh.subset(keep)


_model: dict = {}         # sha256 of the last file → its model (or why it cannot be used)
_evaluations: dict = {}   # (sha256, seed) → results


def _results(outputs, case: Case) -> dict:
    """Load (once per file) and evaluate (once per seed) the submitted model."""
    blob = np.asarray(outputs[0], dtype=np.uint8).tobytes()
    sha, seed = hashlib.sha256(blob).hexdigest(), case.secret["seed"]
    if sha not in _model:   # a new submission: forget the previous one (and its model)
        _model.clear()
        _evaluations.clear()
        try:
            _model[sha] = _load(blob)
        except Unusable as exc:
            _model[sha] = exc
    if (sha, seed) not in _evaluations:
        _evaluations[(sha, seed)] = _evaluate(_model[sha], seed)
    return _evaluations[(sha, seed)]


def _evaluate(model, seed: int) -> dict:
    if isinstance(model, Unusable):
        return {"error": model}
    test = _test_set(seed)
    try:
        predicted = _predict(model, test.x, time.monotonic() + EVAL_SECONDS)
    except Unusable as exc:
        return {"error": exc, "model": model}
    right, e = predicted == test.y, test.extras
    return {"model": model, "n": len(right), "accuracy": right.mean(),
            "contrast": right[e["contrast"]].mean(), "plain": right[~e["contrast"]].mean(),
            "plain_negated": right[~e["contrast"] & e["negated"]].mean(), "positive_rate": predicted.mean()}


def _usable(r: dict) -> tuple[bool, str, str]:
    if "error" in r:
        return False, r["error"].detail, r["error"].hint
    return True, "", ""


def _score_loads(outputs, case):
    return _usable(_results(outputs, case))


def _score_attention(outputs, case):
    r = _results(outputs, case)
    if "model" not in r:
        return _usable(r)
    names = _layer_names(r["model"])
    if names & set(ATTENTION_CLASSES):
        return True, "", ""
    return False, "no attention layer found in the model.", (
        "Use attention: a TransformerEncoderBlock or MultiHeadAttention (ours or Keras's) between the "
        "embedding and the classifier.")


def _diagnose(r: dict) -> str:
    if min(r["positive_rate"], 1 - r["positive_rate"]) < 0.1:
        return ("Your model predicts almost only one class: has it been trained (model.fit)? Use a sigmoid output "
                "with binary cross-entropy and labels 1 = positive.")
    if r["plain"] >= 0.9 and r["contrast"] < 0.7:
        return ("Plain sentences are right but contrasts ('good but boring' vs 'boring but good') are at chance: "
                "the model ignores word order. Add positions (PositionalEmbedding) so attention can tell "
                "which clause comes last.")
    if r["plain_negated"] < 0.8:
        return ("Negated sentences ('not good') are often wrong: attention must link 'not' to the adjective "
                "after it — train longer, or check that padding is masked (mask_zero=True).")
    return "Train longer (watch the validation accuracy), or give the model a little more capacity."


def _score_accuracy(outputs, case):
    r = _results(outputs, case)
    if "accuracy" not in r:
        return _usable(r)
    detail = (f"accuracy {r['accuracy']:.1%} on {r['n']} new sentences (target {TARGET:.0%}); "
              f"plain {r['plain']:.1%}, contrast {r['contrast']:.1%}.")
    return r["accuracy"] >= TARGET, detail, _diagnose(r)


def _score_contrast(outputs, case):
    r = _results(outputs, case)
    if "accuracy" not in r:
        return _usable(r)
    detail = f"accuracy {r['contrast']:.1%} on the contrast sentences (target {CONTRAST_TARGET:.0%})."
    return r["contrast"] >= CONTRAST_TARGET, detail, _diagnose(r)


def _fresh_seed(rng) -> list[Case]:
    return [Case(label="a test set drawn with the grader's seed", secret={"seed": int(rng.integers(1, 2**31))})]


_checks = [
    Check("the saved model reloads and maps token ids to P(positive)", 1, _fresh_seed, score=_score_loads,
          hint="Save and reload your model once yourself: model.save('m.keras'); keras.saving.load_model('m.keras')."),
    Check("the model uses attention", 1, _fresh_seed, score=_score_attention),
    Check(f"accuracy ≥ {TARGET:.0%} on 2000 sentences it never saw", 4, _fresh_seed, score=_score_accuracy),
    Check(f"accuracy ≥ {CONTRAST_TARGET:.0%} on the contrast sentences ('… but …')", 2, _fresh_seed,
          score=_score_contrast),
]

EXERCISE = Exercise(
    "ex07", "exercises/ex07_train_with_attention.ipynb", "Train a model with attention",
    [Question("ex07.q1", "model", "a trained sentiment classifier with attention", None, _checks,
              driver="keras_model_file", own_code=False)],
    memory_mb=8192, cell_timeout=300,
    # The course's layers (and the NumPy modules they import) are tools here, not answers.
    allowed_modules=("attention_lessons.layers", "attention_lessons.attention", "attention_lessons.softmax"),
)
