"""Deterministic offline data for Parts IV and V (and a regression toy for lesson 04).

Every generator takes a ``seed`` and returns the same arrays for the same arguments on every
machine: the data is enumerated or drawn with NumPy's ``default_rng`` only, never downloaded.
Each task comes as a :class:`Dataset` of ``train``/``val``/``test`` :class:`Split` s, with a
:class:`Vocabulary` where the inputs are tokens.

==============================  ==============================================================
``regression_toy``              y = 2 sin x + x^0.8 + noise, the kernel-regression toy (04)
``sentiment``                   movie-review sentences where word order decides (lesson 11)
``sentiment_longer_contrasts``  contrasts with three-word clauses, never in ``sentiment``
``dates``                       human-written dates → ISO 8601 (lesson 12)
``digits``                      scikit-learn's bundled 8×8 digits cut into patches (lesson 13)
``copy_reverse``                copy or reverse a random token string (sanity checks)
``dtmf``                        dialled keypad tones: speech-like audio with exact labels (15)
``write_sentiment_files``       ``sentiment`` as raw text files, one folder per class (16)
``text_corpus``                 Python's own help text (``pydoc_data``), characters (17)
==============================  ==============================================================

This module imports NumPy only (scikit-learn lazily, for the digits).
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Vocabulary", "Split", "Dataset", "regression_toy", "sentiment", "sentiment_label",
           "sentiment_longer_contrasts", "dates",
           "format_date", "DATE_FORMATS", "digits", "patchify", "copy_reverse", "SENTIMENT_GRAMMAR"]

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"


# --------------------------------------------------------------------------- containers
class Vocabulary:
    """Token ↔ id table. Id 0 is always padding, 1 is the unknown token.

    Parameters
    ----------
    tokens : iterable of str
        The known tokens, in the order their ids should follow (duplicates are dropped).
    specials : sequence of str
        Extra reserved tokens placed right after ``<pad>`` and ``<unk>`` (e.g. ``<start>``).
    """

    def __init__(self, tokens: Iterable[str], specials: Sequence[str] = ()):
        self.itos: list[str] = [PAD, UNK]
        for token in [*specials, *tokens]:
            if token not in self.itos:
                self.itos.append(token)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    @property
    def pad_id(self) -> int:
        return 0

    def id(self, token: str) -> int:
        """Id of ``token`` (``KeyError`` naming it if unknown and there is no fallback wanted)."""
        return self.stoi[token]

    def encode(self, tokens: Sequence[str], length: int | None = None) -> np.ndarray:
        """Ids of ``tokens`` (unknown → 1), right-padded with 0 to ``length`` if given.

        Raises ``ValueError`` when the tokens do not fit in ``length``.
        """
        ids = [self.stoi.get(t, 1) for t in tokens]
        if length is not None:
            if len(ids) > length:
                raise ValueError(f"`tokens` has {len(ids)} tokens but `length` is {length}: {list(tokens)!r}")
            ids += [0] * (length - len(ids))
        return np.asarray(ids, dtype=np.int32)

    def encode_batch(self, sequences: Sequence[Sequence[str]], length: int) -> np.ndarray:
        """``(len(sequences), length)`` int32 ids, right-padded with 0."""
        return np.stack([self.encode(s, length) for s in sequences]) if sequences else \
            np.zeros((0, length), np.int32)

    def decode(self, ids: Iterable[int], stop_at: str | None = END, skip: Sequence[str] = (PAD, START)) -> list[str]:
        """Tokens of ``ids``, stopping before ``stop_at`` and leaving out ``skip`` tokens."""
        out = []
        for i in ids:
            token = self.itos[int(i)] if 0 <= int(i) < len(self.itos) else UNK
            if stop_at is not None and token == stop_at:
                break
            if token not in skip:
                out.append(token)
        return out


@dataclass
class Split:
    """One split of a task: inputs ``x``, targets ``y`` and per-example extras (e.g. the text)."""

    x: np.ndarray
    y: np.ndarray
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index) -> "Split":
        """The examples selected by ``index`` (a boolean mask or integer indices)."""
        index = np.asarray(index)
        rows = np.flatnonzero(index) if index.dtype == bool else index.astype(int)
        extras = {k: [v[i] for i in rows] if isinstance(v, list) else np.asarray(v)[rows] for k, v in self.extras.items()}
        return Split(self.x[rows], self.y[rows], extras)


@dataclass
class Dataset:
    """A task: ``train``, ``val`` and ``test`` splits plus what is needed to read them."""

    train: Split
    val: Split
    test: Split
    vocab: Vocabulary | None = None
    target_vocab: Vocabulary | None = None
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name))}" for name in ("train", "val", "test"))
        return f"Dataset({self.info.get('task', 'task')}: {sizes})"


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer; got {value!r}.")


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer; got {seed!r}.")
    return np.random.default_rng(int(seed))


# --------------------------------------------------------------------------- regression toy
def regression_toy(n_train: int = 50, n_test: int = 50, noise: float = 0.5, seed: int = 0) -> Dataset:
    """Noisy samples of f(x) = 2 sin x + x^0.8 on [0, 5] (the kernel-regression toy).

    Training inputs are sorted uniform draws with Gaussian noise (sd ``noise``) on the targets;
    the test inputs are an even grid with noise-free targets, so the curve can be drawn.
    """
    _check_sizes(n_train=n_train, n_test=n_test)
    if noise < 0:
        raise ValueError(f"`noise` must be >= 0; got {noise!r}.")
    rng = _rng(seed)
    f = lambda x: 2 * np.sin(x) + x ** 0.8  # noqa: E731
    x_train = np.sort(rng.uniform(0, 5, n_train))
    y_train = f(x_train) + rng.normal(0, noise, n_train)
    x_test = np.linspace(0, 5, n_test)
    empty = Split(np.zeros(0), np.zeros(0))
    return Dataset(Split(x_train, y_train), empty, Split(x_test, f(x_test)), info={"task": "regression_toy"})


# --------------------------------------------------------------------------- sentiment
SENTIMENT_GRAMMAR = """\
sentence := [opener] "the" NOUN "was" clause
          | [opener] "the" NOUN "was" clause "but" clause   (clauses of at most two words
                                                           whose labels disagree)
clause   := ["not"] [intensifier] ADJ
opener   := "honestly" | "overall" | "i think" | "to be fair"
intensifier := "really" | "very" | "quite"
NOUN     := movie | film | plot | story | cast | acting | script | ending | soundtrack | dialogue
ADJ+     := good | great | fun | clever | lovely | moving | funny | charming
ADJ-     := bad | boring | dull | awful | silly | weak | slow | bland

label(clause)   = polarity(ADJ), flipped by "not"
label(sentence) = label of the last clause   ("X but Y" means Y wins)
"""

_OPENERS = [(), ("honestly",), ("overall",), ("i", "think"), ("to", "be", "fair")]
_INTENSIFIERS = [(), ("really",), ("very",), ("quite",)]
_NOUNS = ["movie", "film", "plot", "story", "cast", "acting", "script", "ending", "soundtrack", "dialogue"]
_POSITIVE = ["good", "great", "fun", "clever", "lovely", "moving", "funny", "charming"]
_NEGATIVE = ["bad", "boring", "dull", "awful", "silly", "weak", "slow", "bland"]
_SENTIMENT_LENGTH = 12


def sentiment_label(tokens: Sequence[str]) -> int:
    """1 (positive) or 0 (negative) for a sentence of the grammar (:data:`SENTIMENT_GRAMMAR`).

    The label of the last clause: its adjective's polarity, flipped when the clause has "not".
    Raises ``ValueError`` for a sentence without a known adjective.
    """
    tokens = list(tokens)
    start = len(tokens) - 1 - tokens[::-1].index("but") if "but" in tokens else 0
    clause = tokens[start:]
    adjectives = [t for t in clause if t in _POSITIVE or t in _NEGATIVE]
    if not adjectives:
        raise ValueError(f"`tokens` has no known adjective in its last clause: {' '.join(tokens)!r}")
    positive = adjectives[-1] in _POSITIVE
    return int(positive != ("not" in clause))


def _clauses():
    for negated in (False, True):
        for intensifier in _INTENSIFIERS:
            for adjective in _POSITIVE + _NEGATIVE:
                words = (("not",) if negated else ()) + intensifier + (adjective,)
                yield words, int((adjective in _POSITIVE) != negated)


@functools.lru_cache(maxsize=1)
def _all_sentences() -> tuple[tuple[tuple[str, ...], int, str], ...]:
    """Every sentence of the grammar with its label and kind ("plain" or "contrast")."""
    clauses = list(_clauses())
    # Two-word clauses in contrasts keep the sentences short ("not good", "very dull").
    short = [(w, y) for w, y in clauses if len(w) <= 2]
    out = []
    for opener, noun in itertools.product(_OPENERS, _NOUNS):
        head = opener + ("the", noun, "was")
        for words, label in clauses:
            out.append((head + words, label, "plain"))
        for (w1, y1), (w2, y2) in itertools.product(short, short):
            if y1 != y2:
                out.append((head + w1 + ("but",) + w2, y2, "contrast"))
    return tuple(out)


def sentiment(n_train: int = 4000, n_val: int = 1000, n_test: int = 2000, seed: int = 0,
              contrast_fraction: float = 0.5) -> Dataset:
    """Movie-review sentences whose label depends on word order (negation and contrast).

    The grammar (:data:`SENTIMENT_GRAMMAR`) generates 166 400 distinct sentences (6 400 plain,
    160 000 contrast); they are shuffled with ``seed`` and cut into disjoint splits, so no test
    sentence occurs in training. A fraction ``contrast_fraction`` of every split are contrast
    ("… but …") sentences, the rest plain ones.

    Returns
    -------
    Dataset
        ``x``: ``(n, 12)`` int32 token ids, 0-padded; ``y``: ``(n,)`` int32 labels, 1 = positive.
        ``extras``: ``text`` (list of str), ``negated`` (has "not"), ``contrast`` (has "but"),
        ``bag_twin`` (another sentence with the same multiset of words exists and has the
        opposite label — no bag-of-words model can get both right).
        ``info["grammar"]`` is the grammar.

    Examples
    --------
    >>> data = sentiment(n_train=10, n_val=2, n_test=4)
    >>> data.vocab.decode(data.train.x[0], stop_at=None)[:3]  # doctest: +SKIP
    ['the', 'plot', 'was']
    """
    _check_sizes(n_train=n_train, n_val=n_val, n_test=n_test)
    if not 0 <= contrast_fraction <= 1:
        raise ValueError(f"`contrast_fraction` must be in [0, 1]; got {contrast_fraction!r}.")
    sentences = _all_sentences()
    rng = _rng(seed)
    by_kind = {kind: [sentences[i] for i in rng.permutation(len(sentences)) if sentences[i][2] == kind]
               for kind in ("plain", "contrast")}
    sizes = [n_train, n_val, n_test]
    want = {"contrast": [round(n * contrast_fraction) for n in sizes]}
    want["plain"] = [n - c for n, c in zip(sizes, want["contrast"])]
    for kind, counts in want.items():
        if sum(counts) > len(by_kind[kind]):
            raise ValueError(f"the splits ask for {sum(counts)} {kind} sentences but the grammar has only "
                             f"{len(by_kind[kind])}; shrink `n_train`/`n_val`/`n_test` or change `contrast_fraction`.")
    parts = []
    for i in range(3):
        part = []
        for kind in ("plain", "contrast"):
            offset = sum(want[kind][:i])
            part += by_kind[kind][offset:offset + want[kind][i]]
        parts.append([part[j] for j in rng.permutation(len(part))])

    bags: dict[tuple, set] = {}
    for words, label, _ in sentences:
        bags.setdefault(tuple(sorted(words)), set()).add(label)

    words = sorted({w for s, _, _ in sentences for w in s})
    vocab = Vocabulary(words)

    def make(part):
        texts = [" ".join(s) for s, _, _ in part]
        extras = {"text": texts,
                  "negated": np.array(["not" in s for s, _, _ in part], dtype=bool),
                  "contrast": np.array([kind == "contrast" for _, _, kind in part], dtype=bool),
                  "bag_twin": np.array([len(bags[tuple(sorted(s))]) == 2 for s, _, _ in part], dtype=bool)}
        x = vocab.encode_batch([s for s, _, _ in part], _SENTIMENT_LENGTH)
        return Split(x, np.array([y for _, y, _ in part], dtype=np.int32), extras)

    train, val, test = (make(part) for part in parts)
    return Dataset(train, val, test, vocab=vocab,
                   info={"task": "sentiment", "grammar": SENTIMENT_GRAMMAR, "max_length": _SENTIMENT_LENGTH,
                         "n_sentences": len(sentences)})


@functools.lru_cache(maxsize=1)
def _longer_contrasts() -> tuple[tuple[tuple[str, ...], int], ...]:
    """Every "X but Y" sentence (labels disagree) with a three-word clause that fits in 12 tokens."""
    clauses = list(_clauses())
    out = []
    for opener, noun in itertools.product(_OPENERS, _NOUNS):
        head = opener + ("the", noun, "was")
        for (w1, y1), (w2, y2) in itertools.product(clauses, clauses):
            if y1 != y2 and max(len(w1), len(w2)) == 3 and len(head) + len(w1) + 1 + len(w2) <= _SENTIMENT_LENGTH:
                out.append((head + w1 + ("but",) + w2, y2))
    return tuple(out)


def sentiment_longer_contrasts(n: int = 2000, seed: int = 0) -> Split:
    """Contrast sentences built from clauses that :func:`sentiment`'s contrasts never use.

    :func:`sentiment`'s contrasts join clauses of at most two words; here at least one clause
    has three ("not really good but very dull", "quite bad but not very funny"), so no sentence
    of any :func:`sentiment` split occurs, and a model must *compose* what it learned from
    plain sentences (three-word clauses) and short contrasts ("… but …"). The labels follow
    the same grammar (:data:`SENTIMENT_GRAMMAR`, the last clause wins); sentences fit in 12
    tokens and are encoded with :func:`sentiment`'s vocabulary. ``n`` sentences are drawn
    without replacement with ``seed`` (238 080 exist).

    Returns
    -------
    Split
        ``x``: ``(n, 12)`` int32 token ids; ``y``: ``(n,)`` int32 labels, 1 = positive;
        ``extras``: ``text``, ``negated`` (has "not"), ``contrast`` (all True).
    """
    _check_sizes(n=n)
    sentences = _longer_contrasts()
    if n > len(sentences):
        raise ValueError(f"`n` must be at most {len(sentences)}; got {n}.")
    chosen = [sentences[i] for i in _rng(seed).choice(len(sentences), size=n, replace=False)]
    vocab = Vocabulary(sorted({w for s, _, _ in _all_sentences() for w in s}))
    x = vocab.encode_batch([s for s, _ in chosen], _SENTIMENT_LENGTH)
    extras = {"text": [" ".join(s) for s, _ in chosen],
              "negated": np.array(["not" in s for s, _ in chosen], dtype=bool),
              "contrast": np.ones(n, dtype=bool)}
    return Split(x, np.array([y for _, y in chosen], dtype=np.int32), extras)


# --------------------------------------------------------------------------- dates
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


#: The human formats of :func:`dates`, with an example for 2026-11-22. Day-first numeric only,
#: so that every string names exactly one date.
DATE_FORMATS: dict[str, str] = {
    "d Mon yyyy": "22 Nov 2026",
    "d Month yyyy": "22 November 2026",
    "Month d, yyyy": "November 22, 2026",
    "Mon d yyyy": "nov 22 2026",
    "dd/mm/yyyy": "22/11/2026",
    "dd.mm.yy": "22.11.26",
    "Weekday d Month yyyy": "Sunday 22 November 2026",
    "the dth of Month yyyy": "the 22nd of November 2026",
    "yyyy mon d": "2026 nov 22",
}


def format_date(date: _dt.date, fmt: str) -> str:
    """``date`` written in one of :data:`DATE_FORMATS` (``ValueError`` naming the known formats)."""
    d, m, y = date.day, date.month, date.year
    month, mon = _MONTHS[m - 1], _MONTHS[m - 1][:3]
    writers = {
        "d Mon yyyy": lambda: f"{d} {mon} {y}",
        "d Month yyyy": lambda: f"{d} {month} {y}",
        "Month d, yyyy": lambda: f"{month} {d}, {y}",
        "Mon d yyyy": lambda: f"{mon.lower()} {d} {y}",
        "dd/mm/yyyy": lambda: f"{d:02d}/{m:02d}/{y}",
        "dd.mm.yy": lambda: f"{d:02d}.{m:02d}.{y % 100:02d}",
        "Weekday d Month yyyy": lambda: f"{_WEEKDAYS[date.weekday()]} {d} {month} {y}",
        "the dth of Month yyyy": lambda: f"the {_ordinal(d)} of {month} {y}",
        "yyyy mon d": lambda: f"{y} {mon.lower()} {d}",
    }
    if fmt not in writers:
        raise ValueError(f"`fmt` must be one of {list(writers)}; got {fmt!r}.")
    return writers[fmt]()


def dates(n_train: int = 8000, n_val: int = 500, n_test: int = 1000, seed: int = 0,
          start: str = "1950-01-01", end: str = "2049-12-31", formats: Sequence[str] | None = None) -> Dataset:
    """Human-written dates paired with their ISO 8601 form, character by character.

    Dates are drawn uniformly between ``start`` and ``end`` (two-digit years in "dd.mm.yy" are
    read in that window, which is why it spans 100 years). The **calendar days** are split, so a
    test date never occurs in training in any format. Each example uses a random format.

    Returns
    -------
    Dataset
        ``x``: ``(n, source_length)`` int32 character ids (``vocab``), 0-padded;
        ``y``: ``(n, 12)`` int32 target ids (``target_vocab``): ``<start>`` + 10 ISO characters + ``<end>``.
        ``extras``: ``source`` (str), ``iso`` (str), ``format`` (str).
    """
    _check_sizes(n_train=n_train, n_val=n_val, n_test=n_test)
    formats = list(DATE_FORMATS) if formats is None else list(formats)
    for fmt in formats:
        if fmt not in DATE_FORMATS:
            raise ValueError(f"`formats` must contain names from DATE_FORMATS {list(DATE_FORMATS)}; got {fmt!r}.")
    first, last = _dt.date.fromisoformat(start), _dt.date.fromisoformat(end)
    n_days = (last - first).days + 1
    if n_days <= 0:
        raise ValueError(f"`end` ({end}) must come after `start` ({start}).")
    if n_days > 36525:
        raise ValueError(f"`start`..`end` spans {n_days} days; at most 100 years keep two-digit years unambiguous.")
    total = n_train + n_val + n_test
    rng = _rng(seed)
    days = rng.permutation(n_days)
    # Disjoint days per split; a split with more examples than days reuses its own days.
    share = np.array([n_train, n_val, n_test], float) / max(total, 1)
    bounds = np.concatenate([[0], np.cumsum(np.round(share * n_days).astype(int))])
    bounds[-1] = n_days
    pools = [days[bounds[i]:bounds[i + 1]] for i in range(3)]

    # Characters and longest string, read off every day of a leap year in every format.
    year = [_dt.date(2000, 1, 1) + _dt.timedelta(days=i) for i in range(366)]
    written = [format_date(day, f) for day in year for f in DATE_FORMATS]
    vocab = Vocabulary(sorted(set("".join(written))))
    target_vocab = Vocabulary(list("0123456789-"), specials=(START, END))
    source_length = max(map(len, written))

    def make(n, pool):
        if n and not len(pool):
            raise ValueError("a split got no calendar days; widen `start`..`end` or shrink the splits.")
        picked = pool[rng.integers(0, len(pool), n)] if n > len(pool) else pool[:n]
        chosen = [first + _dt.timedelta(days=int(i)) for i in picked]
        fmts = [formats[i] for i in rng.integers(0, len(formats), n)]
        sources = [format_date(day, f) for day, f in zip(chosen, fmts)]
        isos = [day.isoformat() for day in chosen]
        x = vocab.encode_batch([list(s) for s in sources], source_length)
        y = target_vocab.encode_batch([[START, *iso, END] for iso in isos], 12)
        return Split(x, y, {"source": sources, "iso": isos, "format": fmts})

    train, val, test = (make(n, pool) for n, pool in zip((n_train, n_val, n_test), pools))
    return Dataset(train, val, test, vocab=vocab, target_vocab=target_vocab,
                   info={"task": "dates", "source_length": source_length, "target_length": 12,
                         "formats": formats})


# --------------------------------------------------------------------------- digits
def patchify(images, patch_size: int) -> np.ndarray:
    """Cut ``(n, H, W)`` images into ``(n, (H/p)·(W/p), p·p)`` non-overlapping patches, row by row.

    Raises ``ValueError`` when ``patch_size`` does not divide both image sides.
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"`images` must be (n, height, width); got shape {images.shape}.")
    n, h, w = images.shape
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1 \
            or h % patch_size or w % patch_size:
        raise ValueError(f"`patch_size` must be a positive integer dividing the image sides {h}×{w}; got {patch_size!r}.")
    p = int(patch_size)
    patches = images.reshape(n, h // p, p, w // p, p).transpose(0, 1, 3, 2, 4)  # (n, rows, cols, p, p)
    return patches.reshape(n, (h // p) * (w // p), p * p)


def digits(patch_size: int = 2, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, no download), as patches.

    Pixel values are scaled from 0–16 to 0–1. Splits are stratified by class and seeded.

    Returns
    -------
    Dataset
        ``x``: ``(n, (8/p)², p²)`` float32 patches; ``y``: ``(n,)`` int32 digit labels.
        ``extras["images"]``: the ``(n, 8, 8)`` float32 images.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"`val_fraction` ({val_fraction}) and `test_fraction` ({test_fraction}) must be in (0, 1) "
                         "and sum to less than 1.")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int32)
    x = patchify(images, patch_size)  # validates patch_size
    rng = _rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == label))
        n_test, n_val = round(len(index) * test_fraction), round(len(index) * val_fraction)
        parts["test"].append(index[:n_test])
        parts["val"].append(index[n_test:n_test + n_val])
        parts["train"].append(index[n_test + n_val:])

    def make(name):
        index = rng.permutation(np.concatenate(parts[name]))
        return Split(x[index], labels[index], {"images": images[index]})

    train, val, test = make("train"), make("val"), make("test")
    side = 8 // patch_size
    return Dataset(train, val, test, info={"task": "digits", "patch_size": patch_size, "grid": (side, side),
                                           "num_classes": 10})


# --------------------------------------------------------------------------- copy / reverse
def copy_reverse(task: str = "reverse", n_train: int = 2000, n_val: int = 200, n_test: int = 500, length: int = 8,
                 vocab_size: int = 10, seed: int = 0) -> Dataset:
    """Random token strings and their copy (``task="copy"``) or reversal (``task="reverse"``).

    Tokens are ids ``2 … vocab_size + 1`` (0 is padding, 1 unknown), all of length ``length``;
    ``x`` and ``y`` are ``(n, length)`` int32. Test strings never occur in training (when there
    are enough distinct strings).
    """
    if task not in ("copy", "reverse"):
        raise ValueError(f"`task` must be 'copy' or 'reverse'; got {task!r}.")
    _check_sizes(n_train=n_train, n_val=n_val, n_test=n_test, length=length, vocab_size=vocab_size)
    if length < 1 or vocab_size < 2:
        raise ValueError(f"`length` must be >= 1 and `vocab_size` >= 2; got {length} and {vocab_size}.")
    rng = _rng(seed)
    total = n_train + n_val + n_test
    x = rng.integers(2, vocab_size + 2, size=(total, length)).astype(np.int32)
    if float(vocab_size) ** length >= 10 * total:
        # Redraw duplicates so that the splits are disjoint.
        seen, rows = set(), []
        for row in x:
            while row.tobytes() in seen:
                row = rng.integers(2, vocab_size + 2, size=length).astype(np.int32)
            seen.add(row.tobytes())
            rows.append(row)
        x = np.stack(rows) if rows else x
    y = x.copy() if task == "copy" else x[:, ::-1].copy()
    cuts = np.cumsum([n_train, n_val])
    splits = [Split(a, b) for a, b in zip(np.split(x, cuts), np.split(y, cuts))]
    vocab = Vocabulary([str(i) for i in range(vocab_size)])
    return Dataset(*splits, vocab=vocab, info={"task": task, "length": length})


# --------------------------------------------------------------------------- sentiment as raw text files
import os  # noqa: E402 - kept with the only section that writes files
from pathlib import Path  # noqa: E402


@dataclass(frozen=True)
class TextFolders:
    """What :func:`write_sentiment_files` wrote: the root, one folder per split, file counts.

    ``paths[split]`` is ``root / split``, holding one sub-folder per class (``neg``, ``pos``);
    ``counts[split][class_name]`` is the number of ``.txt`` files written there.
    """

    root: Path
    paths: dict
    counts: dict


SENTIMENT_CLASSES = ("neg", "pos")


def write_sentiment_files(folder, n_train: int = 2000, n_val: int = 500, n_test: int = 1000, seed: int = 0,
                          contrast_fraction: float = 0.5) -> TextFolders:
    """Write :func:`sentiment`'s sentences as raw text files, one folder per split and class.

    The layout is the one ``keras.utils.text_dataset_from_directory`` reads (class names
    sorted alphabetically give the label ids, so ``neg`` = 0 and ``pos`` = 1, the labels
    of :func:`sentiment`)::

        folder/train/neg/00000.txt   folder/train/pos/00001.txt   ...
        folder/val/...               folder/test/...

    Each file holds one sentence and a final newline, UTF-8. The file's number is the
    sentence's index in its split of ``sentiment(n_train, n_val, n_test, seed,
    contrast_fraction)``, so every file can be traced back to the arrays.

    Parameters
    ----------
    folder : str or os.PathLike
        An existing folder; it must not hold ``train``/``val``/``test`` already (files of
        two calls would mix).
    n_train, n_val, n_test, seed, contrast_fraction
        As in :func:`sentiment`.

    Returns
    -------
    TextFolders
        ``root``, ``paths`` (split name → folder) and ``counts`` (split → class → files).

    Raises
    ------
    ValueError
        If ``folder`` is not an existing folder, already holds a split folder, or the sizes
        are invalid (see :func:`sentiment`).
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"`folder` must be a path (str or os.PathLike); got {type(folder).__name__} {folder!r}.")
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"`folder` must be an existing folder; got {str(root)!r}.")
    taken = [name for name in ("train", "val", "test") if (root / name).exists()]
    if taken:
        raise ValueError(f"`folder` already holds {taken}; write into an empty folder so that two data sets "
                         f"cannot mix (got {str(root)!r}).")
    ds = sentiment(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed, contrast_fraction=contrast_fraction)
    paths, counts = {}, {}
    for name in ("train", "val", "test"):
        split = getattr(ds, name)
        paths[name] = root / name
        counts[name] = {label: 0 for label in SENTIMENT_CLASSES}
        for label in SENTIMENT_CLASSES:
            (root / name / label).mkdir(parents=True)
        width = max(5, len(str(max(len(split) - 1, 0))))
        for i, (text, y) in enumerate(zip(split.extras["text"], split.y.tolist())):
            label = SENTIMENT_CLASSES[y]
            (root / name / label / f"{i:0{width}d}.txt").write_text(text + "\n", encoding="utf-8")
            counts[name][label] += 1
    return TextFolders(root=root, paths=paths, counts=counts)


__all__ += ["TextFolders", "SENTIMENT_CLASSES", "write_sentiment_files"]


# --------------------------------------------------------------------------- text corpus (lesson 17)
#: The characters of :func:`char_vocabulary`: the newline and the 95 printable ASCII characters.
CORPUS_CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))

# Typographic characters of the Python documentation, written in ASCII (anything else is dropped).
_TO_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...",
                           "\u2014": "--", "\u2013": "-", "\u00df": "ss", "\u00a0": " ", "\t": "    ",
                           "\r": ""})


def char_vocabulary() -> Vocabulary:
    """The character vocabulary of :func:`text_corpus`: 98 ids, the same on every machine.

    Id 0 is ``<pad>`` and 1 ``<unk>`` (as in every :class:`Vocabulary`; neither occurs in the
    corpus), then the newline (id 2), the space (id 3) and the printable ASCII characters
    ``!`` … ``~`` in code-point order (ids 4 … 97).
    """
    return Vocabulary(CORPUS_CHARACTERS)


def _to_corpus_characters(text: str) -> str:
    """``text`` in the corpus's 96 characters: typographic quotes and dashes as ASCII, the rest dropped."""
    allowed = set(CORPUS_CHARACTERS)
    return "".join(c for c in text.translate(_TO_ASCII) if c in allowed)


@dataclass
class TextCorpus:
    """A character-level text corpus split into train / validation / test text.

    ``documents`` maps each document's name to its (cleaned) text; ``train``, ``val`` and
    ``test`` are strings over :attr:`vocab`'s characters; :meth:`ids` encodes a split.
    """

    train: str
    val: str
    test: str
    vocab: Vocabulary
    documents: dict
    info: dict = field(default_factory=dict)

    def ids(self, split: str) -> np.ndarray:
        """Character ids ``(len(text),)`` int32 of ``split`` ("train", "val" or "test")."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"`split` must be 'train', 'val' or 'test'; got {split!r}.")
        return self.vocab.encode(list(getattr(self, split)))

    def __repr__(self) -> str:
        return (f"TextCorpus({self.info.get('name', 'text')}: train={len(self.train):,}, "
                f"val={len(self.val):,}, test={len(self.test):,} characters)")


def text_corpus(name: str = "pydoc_topics", max_chars: int = 400_000, chunk_chars: int = 1_000,
                val_chunks: int = 20, test_chunks: int = 20, seed: int = 0) -> TextCorpus:
    """An offline English text corpus for a character-level language model (lesson 17).

    ``name="pydoc_topics"``: the help texts that ``help("assert")``, ``help("with")``, … print,
    from :mod:`pydoc_data.topics`, which ships with CPython (3.10–3.13 have the same 79
    topics, about 460 000 – 510 000 characters). **Licence:** the text is part of CPython's
    documentation, distributed with Python under the Python Software Foundation License
    Version 2 (code examples in the documentation also under the Zero-Clause BSD licence);
    see ``help("copyright")`` / https://docs.python.org/3/license.html. Nothing is downloaded.

    The topics are cleaned to the 96 characters of :func:`char_vocabulary` (typographic quotes
    and dashes become ASCII, the few other non-ASCII characters are dropped), joined in the
    order of their names with a blank line between them, and cut into consecutive chunks of
    ``chunk_chars`` characters (the incomplete last chunk is dropped). A seeded permutation
    gives ``val_chunks`` chunks to validation, ``test_chunks`` to test and the rest, up to
    ``max_chars`` characters in all, to training; each split keeps its chunks in text order.
    Held-out text therefore comes from the same documentation but never overlaps training.

    The wording of the documentation changes a little between Python versions, so the text
    (not its size, as long as the version has more than ``max_chars`` characters) depends on
    the version: lessons print only the sizes and version-independent facts.

    Parameters
    ----------
    name : {"pydoc_topics"}
    max_chars : int, default 400_000
        Upper bound on the characters of all three splits together.
    chunk_chars : int, default 1_000
    val_chunks, test_chunks : int, default 20
    seed : int, default 0
        Which chunks are held out.

    Returns
    -------
    TextCorpus
        ``info`` holds ``name``, ``licence``, ``chunk_chars``, ``n_documents``, ``total_chars``
        (of the whole cleaned text, version-dependent) and ``chunks`` (each split's chunk
        numbers: chunk ``i`` is ``text[i * chunk_chars:(i + 1) * chunk_chars]``).
    """
    if name != "pydoc_topics":
        raise ValueError(f"`name` must be 'pydoc_topics' (the only corpus so far); got {name!r}.")
    _check_sizes(max_chars=max_chars, chunk_chars=chunk_chars, val_chunks=val_chunks, test_chunks=test_chunks)
    if chunk_chars < 1:
        raise ValueError(f"`chunk_chars` must be >= 1; got {chunk_chars}.")
    rng = _rng(seed)
    try:
        from pydoc_data.topics import topics
    except ImportError as error:                       # a Python built without its documentation
        raise ValueError("`name`='pydoc_topics' needs the standard library's pydoc_data package, "
                         "which this Python lacks.") from error
    documents = {key: _to_corpus_characters(topics[key]).strip() + "\n" for key in sorted(topics)}
    text = "\n".join(documents.values())               # a blank line between two documents
    n_chunks = len(text) // chunk_chars
    held_out = val_chunks + test_chunks
    if held_out * chunk_chars > max_chars or held_out >= n_chunks:
        raise ValueError(f"`val_chunks` + `test_chunks` = {held_out} chunks of `chunk_chars`={chunk_chars} do not "
                         f"fit in `max_chars`={max_chars} and the {n_chunks} chunks of the text with room for training.")
    order = rng.permutation(n_chunks)
    n_train = min(n_chunks, max_chars // chunk_chars) - held_out
    parts = {"val": order[:val_chunks], "test": order[val_chunks:held_out],
             "train": order[held_out:held_out + n_train]}
    joined = {split: "".join(text[i * chunk_chars:(i + 1) * chunk_chars] for i in np.sort(chunks))
              for split, chunks in parts.items()}
    info = {"name": name, "chunk_chars": chunk_chars, "n_documents": len(documents), "total_chars": len(text),
            "chunks": {split: np.sort(chunks) for split, chunks in parts.items()},
            "licence": "Python Software Foundation License Version 2 (CPython documentation)"}
    return TextCorpus(joined["train"], joined["val"], joined["test"], char_vocabulary(), documents, info)


__all__ += ["CORPUS_CHARACTERS", "char_vocabulary", "TextCorpus", "text_corpus"]


# --------------------------------------------------------------------------- speech-like audio (DTMF)
#: Telephone keypad (ITU-T Q.23): each key is the sum of one low and one high sine, in Hz.
DTMF_KEYS: dict[str, tuple[float, float]] = {
    "1": (697.0, 1209.0), "2": (697.0, 1336.0), "3": (697.0, 1477.0),
    "4": (770.0, 1209.0), "5": (770.0, 1336.0), "6": (770.0, 1477.0),
    "7": (852.0, 1209.0), "8": (852.0, 1336.0), "9": (852.0, 1477.0),
    "*": (941.0, 1209.0), "0": (941.0, 1336.0), "#": (941.0, 1477.0),
}


def _range(value, name: str, low: float, high: float | None = None) -> tuple[float, float]:
    """A scalar or a (min, max) pair as a checked (min, max) pair within [low, high]."""
    pair = (value, value) if np.ndim(value) == 0 else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, float, np.integer, np.floating)) and
                                 not isinstance(v, bool) and np.isfinite(v) for v in pair):
        raise ValueError(f"`{name}` must be a number or a (min, max) pair of numbers; got {value!r}.")
    a, b = float(pair[0]), float(pair[1])
    if a > b or a < low or (high is not None and b > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must lie in {bound} with min <= max; got {value!r}.")
    return a, b


def dtmf(n: int = 1000, min_digits: int = 3, max_digits: int = 5, speed=(0.9, 1.2), snr_db=(10.0, 30.0),
         sample_rate: int = 8000, duration: float = 1.2, keys: str = "0123456789*#", seed: int = 0) -> Split:
    """Speech-like audio with exact labels: key sequences dialled on a telephone keypad (DTMF).

    Every clip holds ``min_digits`` … ``max_digits`` key presses. Each press is a **tone**, the sum
    of the key's low and high sine (:data:`DTMF_KEYS`), followed by a **pause**; clips start after a
    short lead-in of silence. Like speech, the clips vary in:

    * **rate**: tone 50–100 ms, pause 30–80 ms, lead-in 20–100 ms, all divided by the clip's
      ``speed`` (drawn uniformly from the ``speed`` range; 1.5 = a speaker 1.5× faster);
    * **pitch**: each sine is detuned by up to ±1.5 % (what the DTMF standard tolerates), random phase;
    * **loudness**: each press has its own level (0.2–0.9) and twist (high/low ratio 0.7–1.4);
    * **noise**: white Gaussian noise over the whole clip; ``snr_db`` (uniform in the range, per
      clip) is the tones' mean power over the noise power, in decibels (0 dB = as loud as the tones).

    Tones start and stop with 5 ms raised-cosine ramps (no clicks). Everything is drawn from
    ``numpy.random.default_rng(seed)``: the same arguments give the same clips on every machine
    (labels and boundaries exactly; samples up to float rounding of ``np.sin``).

    Parameters
    ----------
    n : int
        Number of clips.
    min_digits, max_digits : int
        Range of key presses per clip (inclusive), 1 <= min_digits <= max_digits.
    speed : float or (float, float)
        Speaking rate, or the range it is drawn from per clip; > 0.
    snr_db : float or (float, float)
        Signal-to-noise ratio in dB, or its range per clip.
    sample_rate : int
        Samples per second; at least 4000 so that the highest tone (1477 Hz, +1.5 %) lies below
        the Nyquist frequency with room for a filter's edge.
    duration : float
        Length of every clip in seconds; must hold the slowest possible clip (checked).
    keys : str
        The keys that may be pressed (a subset of ``"0123456789*#"``).
    seed : int

    Returns
    -------
    Split
        ``x``: ``(n, round(duration · sample_rate))`` float32 waveforms;
        ``y``: ``(n, max_digits + 2)`` int32 ids in :func:`dtmf_vocabulary`: ``<start>``, the keys,
        ``<end>``, then 0-padding;
        ``extras``: ``text`` (list of str, the keys pressed), ``segments`` (list of int arrays
        ``(digits, 2)``: first and one-past-last sample of each tone), ``seconds`` (the same in
        seconds, float arrays), ``speed`` and ``snr_db`` (float arrays ``(n,)``), ``sample_rate`` (int).
    """
    _check_sizes(n=n)
    for name, value in (("min_digits", min_digits), ("max_digits", max_digits), ("sample_rate", sample_rate)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    if min_digits > max_digits:
        raise ValueError(f"`min_digits` ({min_digits}) must not exceed `max_digits` ({max_digits}).")
    if sample_rate < 4000:
        raise ValueError(f"`sample_rate` must be >= 4000 Hz (the tones reach 1.5 kHz); got {sample_rate}.")
    if not isinstance(keys, str) or not keys or any(k not in DTMF_KEYS for k in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"`keys` must be distinct characters from {''.join(DTMF_KEYS)!r}; got {keys!r}.")
    speed_range = _range(speed, "speed", 1e-3)
    snr_range = _range(snr_db, "snr_db", -40.0, 100.0)
    if isinstance(duration, bool) or not isinstance(duration, (int, float, np.integer, np.floating)) \
            or not np.isfinite(duration) or duration <= 0:
        raise ValueError(f"`duration` must be a positive number of seconds; got {duration!r}.")
    tone_ms, pause_ms, lead_ms = (50.0, 100.0), (30.0, 80.0), (20.0, 100.0)
    longest = (lead_ms[1] + max_digits * (tone_ms[1] + pause_ms[1])) / 1000 / speed_range[0]
    if longest > duration:
        raise ValueError(f"`duration`={duration} s cannot hold the slowest clip ({max_digits} digits at speed "
                         f"{speed_range[0]}: up to {longest:.3f} s); raise `duration` or the `speed` minimum.")
    rng = _rng(seed)
    length = int(round(duration * sample_rate))
    vocab = dtmf_vocabulary()
    ramp = max(1, int(round(0.005 * sample_rate)))
    x = np.zeros((n, length), dtype=np.float64)
    y = np.zeros((n, max_digits + 2), dtype=np.int32)
    texts, segments, speeds, snrs = [], [], np.zeros(n), np.zeros(n)
    for i in range(n):
        count = int(rng.integers(min_digits, max_digits + 1))
        text = "".join(keys[j] for j in rng.integers(0, len(keys), count))
        rate = rng.uniform(*speed_range)
        snr = rng.uniform(*snr_range)
        tones = rng.uniform(*tone_ms, count) / 1000 / rate            # (count,) seconds
        pauses = rng.uniform(*pause_ms, count) / 1000 / rate          # (count,) seconds
        lead = rng.uniform(*lead_ms) / 1000 / rate
        starts = lead + np.concatenate([[0.0], np.cumsum(tones + pauses)[:-1]])
        bounds = np.stack([np.round(starts * sample_rate), np.round((starts + tones) * sample_rate)], 1).astype(np.int64)
        power = []
        for key, (a, b) in zip(text, bounds):
            t = np.arange(b - a) / sample_rate                        # time inside the tone, seconds
            f_low, f_high = np.array(DTMF_KEYS[key]) * (1 + rng.uniform(-0.015, 0.015, 2))
            phase = rng.uniform(0, 2 * np.pi, 2)
            level, twist = rng.uniform(0.2, 0.9), rng.uniform(0.7, 1.4)
            tone = level * (np.sin(2 * np.pi * f_low * t + phase[0]) + twist * np.sin(2 * np.pi * f_high * t + phase[1]))
            edge = np.minimum(1.0, np.minimum(np.arange(b - a) + 0.5, np.arange(b - a)[::-1] + 0.5) / ramp)
            x[i, a:b] = tone * (0.5 - 0.5 * np.cos(np.pi * edge))     # raised-cosine ramps, 0 -> 1 -> 0
            power.append(level ** 2 * (1 + twist ** 2) / 2)           # mean power of the two sines
        x[i] += rng.normal(0.0, np.sqrt(np.mean(power) / 10 ** (snr / 10)), length)
        y[i, :count + 2] = vocab.encode([START, *text, END])
        texts.append(text)
        segments.append(bounds)
        speeds[i], snrs[i] = rate, snr
    return Split(x.astype(np.float32), y, {
        "text": texts, "segments": segments, "seconds": [s / sample_rate for s in segments],
        "speed": speeds, "snr_db": snrs, "sample_rate": int(sample_rate)})


def dtmf_vocabulary() -> Vocabulary:
    """Targets of :func:`dtmf`: ``<pad>`` 0, ``<unk>`` 1, ``<start>`` 2, ``<end>`` 3, then the 12 keys."""
    return Vocabulary(list("0123456789*#"), specials=(START, END))


__all__ += ["DTMF_KEYS", "dtmf", "dtmf_vocabulary"]
