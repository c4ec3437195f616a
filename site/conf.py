"""Sphinx configuration of the course's website (``make site``; scripts/build_site.py).

scripts/build_site.py writes processed copies of the notebooks, a home page made from the README's
course map and the instructors' guide into a staging folder (build/site-src) and runs Sphinx there with
this folder as its configuration folder (``sphinx-build -c site``). Nothing is fetched at build or view time: the theme (sphinx-book-theme) comes from pip,
MathJax from node/node_modules (npm, pinned in node/package-lock.json), and the notebooks are rendered
from their stored outputs (myst-nb, no execution).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))
from attention_lessons.course import BRANCH, REPOSITORY, SITE  # noqa: E402

project = "Attention lessons"
author = "the attention-lessons authors"
copyright = "the attention-lessons authors (MIT licence)"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "_original/**", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]   # notebooks use "#" for the title and "##" for sections only

# Notebooks are shown with the outputs stored in them (nbval checks those outputs): never executed here.
nb_execution_mode = "off"
nb_merge_streams = True
# The temperature explorer of lesson 03 is a live ipywidget; without a kernel the site shows the PNG that
# the widget stores next to its view (and no widget JavaScript is loaded from a CDN).
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None),
                              ("dirhtml", "application/vnd.jupyter.widget-view+json", None)]
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True      # $$…$$ inside a paragraph or list item, as Jupyter renders it
myst_heading_anchors = 3

# Maths: MathJax 3 from npm (node/node_modules/mathjax, scripts/install_node_packages.sh), copied into
# _static. tex-svg-full.js holds every TeX extension and draws SVG, so it needs no font files and loads
# nothing else.
MATHJAX = REPOSITORY_ROOT / "node" / "node_modules" / "mathjax" / "es5" / "tex-svg-full.js"
if not MATHJAX.exists():
    raise FileNotFoundError(f"{MATHJAX} is missing: run scripts/install_node_packages.sh (npm ci in node/).")
mathjax_path = MATHJAX.name

html_theme = "sphinx_book_theme"
html_title = "Attention lessons"
html_baseurl = SITE
html_static_path = ["_static", str(MATHJAX)]
html_css_files = ["course.css"]
html_copy_source = False          # the notebooks link to their own download (the repository's file)
html_show_sourcelink = False
html_last_updated_fmt = None
# The figures have white backgrounds: light mode (an empty mode makes the theme log a console error).
html_context = {"default_mode": "light"}
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": BRANCH,
    "path_to_docs": "",              # pages have the paths of the repository's files
    "use_repository_button": True,
    "use_download_button": False,     # each notebook page has its own download link
    "use_fullscreen_button": False,
    "use_source_button": False,
    "use_issues_button": False,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
