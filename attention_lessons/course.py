"""The course's table of contents and the one place that names its public repository.

Every notebook starts with a title cell holding an "Open in Colab" badge and a setup cell
that, on Colab only, installs this package from :data:`REPOSITORY`. Both cells are built
here; ``tests/test_hygiene.py`` checks every notebook against them, and
``attention-lessons sync`` rewrites them after a change of URL.
"""

from __future__ import annotations

REPOSITORY = "https://github.com/attention-lessons/attention-lessons"
BRANCH = "main"
#: The course as a website (GitHub Pages of :data:`REPOSITORY`; built by ``make site``,
#: published by .github/workflows/pages.yml).
SITE = "https://attention-lessons.github.io/attention-lessons/"

#: (file stem, title) of each lesson, in course order.
LESSONS: list[tuple[str, str]] = [
    ("00_start_here", "Start here"),
    ("01_neurons_and_weighted_sums", "Neurons and weighted sums"),
    ("02_normalization_and_softmax", "Normalization and softmax"),
    ("03_softmax_weighting", "Softmax weighting"),
    ("04_attention_pooling", "Attention pooling"),
    ("05_scoring_functions", "Scoring functions"),
    ("06_scaled_dot_product_attention", "Scaled dot-product attention"),
    ("07_self_and_cross_attention", "Self- and cross-attention"),
    ("08_multi_head_attention", "Multi-head attention"),
    ("09_keras_multi_head_layer", "The Keras multi-head attention layer"),
    ("10_attention_on_gpu", "Attention on GPU"),
    ("11_transformer_text_classifier", "A transformer text classifier"),
    ("12_seq2seq_with_attention", "Sequence to sequence with attention"),
    ("13_attention_for_vision", "Attention for vision"),
    ("14_long_sequences", "Long sequences"),
    ("15_attention_for_speech", "Attention for speech"),
    ("16_your_own_data", "From your own data to a saved model"),
    ("17_language_model", "A small language model"),
    ("18_kv_cache", "Generating with a KV cache"),
    ("19_positions_and_long_context", "Positions and long context"),
    ("20_modern_attention_block", "The modern attention block"),
    ("21_brains_and_transformers", "Brains and transformers"),
]

#: (file stem, title, lessons covered) of each exercise.
EXERCISES: list[tuple[str, str, str]] = [
    ("ex01_weighted_sums", "Weighted sums", "01"),
    ("ex02_softmax", "Softmax", "02–03"),
    ("ex03_attention_pooling", "Attention pooling", "04"),
    ("ex04_scaled_dot_product", "Scaled dot-product attention", "05–06"),
    ("ex05_multi_head_numpy", "Multi-head attention in NumPy", "07–08"),
    ("ex06_keras_layer", "A Keras multi-head attention layer", "09–10"),
    ("ex07_train_with_attention", "Train a model with attention", "11–13"),
    ("ex08_online_softmax", "Online-softmax attention", "14"),
    ("ex09_kv_cache", "Decoding with a KV cache", "18"),
    ("ex10_rope_and_gqa", "Rotary positions and grouped-query attention", "19–20"),
]


def lessons_table() -> str:
    """Markdown table of the lessons, in course order (lesson 00 displays it, so it follows :data:`LESSONS`)."""
    rows = "\n".join(f"| {stem[:2]} | `notebooks/{stem}.ipynb` | {title} |" for stem, title in LESSONS)
    return "| # | lesson | topic |\n|---|---|---|\n" + rows


def exercises_table() -> str:
    """Markdown table of the exercises (lesson 00 displays it, so it follows :data:`EXERCISES`)."""
    rows = "\n".join(f"| {stem[:4]} | `exercises/{stem}.ipynb` | {title} | {covers} |"
                     for stem, title, covers in EXERCISES)
    return "| ex | notebook | topic | after lessons |\n|---|---|---|---|\n" + rows


def colab_url(path: str) -> str:
    """Colab address that opens ``path`` (relative to the repository root) from GitHub."""
    github = REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{BRANCH}/{path}"


def colab_badge(path: str) -> str:
    """Markdown for the "Open in Colab" badge of ``path``."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(path)})"


def nbgitpuller_url(hub: str, path: str, repository: str | None = None, branch: str | None = None) -> str:
    """A JupyterHub link that clones (or updates) the course for the student and opens ``path``.

    Uses nbgitpuller's ``git-pull`` endpoint, which the hub must have installed.

    Parameters
    ----------
    hub : str
        The hub's http(s) URL.
    path : str
        The notebook to open, relative to the repository root.
    repository, branch : str, optional
        Where nbgitpuller clones from: :data:`REPOSITORY` and :data:`BRANCH` unless given (a fork,
        a mirror on the hub's network, or ``file://`` for a local test). The clone's folder in the
        student's home is the repository's last path component (without ``.git``), as nbgitpuller names it.
    """
    from urllib.parse import quote, urlencode

    if not hub.startswith(("http://", "https://")):
        raise ValueError(f"`hub` must be an http(s) URL of a JupyterHub; got {hub!r}.")
    repository = REPOSITORY if repository is None else repository
    branch = BRANCH if branch is None else branch
    if not repository.startswith(("http://", "https://", "git://", "ssh://", "file://")):
        raise ValueError(f"`repository` must be a git URL (https://, git://, ssh:// or file://); got {repository!r}.")
    folder = repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    query = urlencode({"repo": repository, "branch": branch, "urlpath": f"lab/tree/{folder}/{path}"}, quote_via=quote)
    return f"{hub.rstrip('/')}/hub/user-redirect/git-pull?{query}"


def pip_requirement() -> str:
    """What the Colab setup cell installs: this package straight from its repository."""
    return f"attention-lessons @ git+{REPOSITORY}@{BRANCH}"


def setup_cell_source() -> str:
    """Source of the setup cell that every notebook runs second."""
    return (
        "# Setup. On Google Colab this installs the course package; TensorFlow, Keras and NumPy\n"
        "# are already there and are kept as they are. On your own machine `make lab` has\n"
        "# installed everything, so this cell does nothing.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install --quiet \"{pip_requirement()}\""
    )


def title_cell_source(path: str, title: str) -> str:
    """Source of the first (markdown) cell: the title and the Colab badge."""
    return f"# {title}\n\n{colab_badge(path)}"
