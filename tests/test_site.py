"""The course's website (``make site``) in a real browser: Chromium, driven by Playwright, offline.

The site is served from build/site by a local HTTP server (as GitHub Pages serves it) and every page
reachable from the home page is opened. Requests to any other host are refused and recorded, so the
maths test also proves that MathJax comes from the site itself. Checked:

* every course notebook listed in attention_lessons/course.py exists and has a page, in course order in
  the navigation, each exercise before its solution;
* every page loads without a console error and asks for nothing outside the site;
* maths is rendered by MathJax (no raw ``$...$`` or ``\\(...\\)`` left in the text);
* every image loads, and every figure has alt text;
* every notebook page has an "Open in Colab" link to its notebook and a download link that serves the
  repository's notebook;
* search for "softmax" finds lesson 03;
* no internal link is broken (pages, downloads, images, and #anchors on the pages).

`make test` builds the site first (scripts/build_site.py --strict); run alone, the test builds it when
build/site is missing or older than its sources (ATTENTION_LESSONS_SITE_AS_IS=1: test build/site as it
is, e.g. a site built with missing notebooks during development). Needs Debian's Chromium (scripts/install_browser.sh) and
node/node_modules (scripts/install_node_packages.sh, for MathJax). Where they are missing the test is
skipped with the reason, unless ATTENTION_LESSONS_REQUIRE_BROWSER=1 (set by `make test`): then it fails.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path

import pytest
from chromium import launched_chromium  # tests/chromium.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_site import OUT, course_pages  # noqa: E402

from attention_lessons.course import colab_url  # noqa: E402

MATHJAX = ROOT / "node" / "node_modules" / "mathjax" / "es5" / "tex-svg-full.js"
ARTIFACTS = ROOT / "artifacts" / "site"
PAGE_TIMEOUT = 60_000     # ms: one page and its maths on a busy 2-core machine
TABS = 4                  # pages loading at once during the crawl
SOURCES = [ROOT / "README.md", ROOT / "docs" / "instructors.md", ROOT / "scripts" / "build_site.py",
           *(ROOT / "site").rglob("*")]

# Page-side probe, run once a page and its maths are done.
PAGE_STATE_JS = r"""() => {
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, .highlight, mjx-container, script, style').forEach(e => e.remove());
  return {
    title: document.title,
    math: Array.from(main.querySelectorAll('.math')).map(e => ({
        rendered: !!e.querySelector('mjx-container svg'), text: e.textContent.slice(0, 80)})),
    prose: prose.textContent,
    images: Array.from(document.images).map(img => ({
        src: img.currentSrc || img.src, alt: img.getAttribute('alt'),
        ok: img.complete && img.naturalWidth > 0,
        output: !!img.closest('.cell_output')})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => ({
        href: a.href, raw: a.getAttribute('href'), text: a.textContent.trim(),
        download: a.classList.contains('download') || a.hasAttribute('download')})),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
    nav: Array.from(document.querySelectorAll('.bd-sidebar-primary nav a.reference.internal'))
              .map(a => a.getAttribute('href')),
  };
}"""
RAW_MATH = re.compile(r"\$[^$\s][^$\n]*\$|\\\(|\\\)|\\\[|\\\]")


def _require(reason: str) -> None:
    if os.environ.get("ATTENTION_LESSONS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (ATTENTION_LESSONS_REQUIRE_BROWSER=1: required here)")
    pytest.skip(reason)


def _page_path(repo_path: str) -> str:
    return repo_path.removesuffix(".ipynb") + ".html"


def test_every_listed_notebook_exists_in_the_repository():
    missing = [path for _, path in course_pages() if not (ROOT / path).exists()]
    assert not missing, f"listed in attention_lessons/course.py but missing: {missing}"


def test_exercises_come_before_their_solutions_and_after_their_lessons():
    order = [path for _, path in course_pages()]
    for kind, path in course_pages():
        if kind == "exercise":
            stem = Path(path).stem
            assert order.index(path) < order.index(f"solutions/{stem}.ipynb"), path
    assert order.index("notebooks/03_softmax_weighting.ipynb") < order.index("exercises/ex02_softmax.ipynb") \
        < order.index("notebooks/04_attention_pooling.ipynb")


def test_the_site_address_is_the_github_pages_of_the_repository():
    from attention_lessons.course import REPOSITORY, SITE

    owner, name = REPOSITORY.removeprefix("https://github.com/").split("/")
    assert SITE == f"https://{owner}.github.io/{name}/"


# --------------------------------------------------------------------------- building and serving

@pytest.fixture(scope="module")
def site() -> Path:
    """build/site, built now (strict) if it is missing or older than the notebooks, README or config."""
    if not MATHJAX.exists():
        _require(f"no MathJax at {MATHJAX}: run scripts/install_node_packages.sh (needs node and npm)")
    index = OUT / "index.html"
    sources = SOURCES + [ROOT / p for _, p in course_pages() if (ROOT / p).exists()]
    stale = not index.exists() or max(p.stat().st_mtime for p in sources if p.is_file()) > index.stat().st_mtime
    if stale and not (index.exists() and os.environ.get("ATTENTION_LESSONS_SITE_AS_IS") == "1"):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_site.py"), "--strict"],
                              capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, f"scripts/build_site.py --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return OUT


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):   # the browser left mid-download: fine
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium(_require)


def _watch(page, base: str):
    page.set_default_timeout(PAGE_TIMEOUT)
    page.console_errors, page.outside = [], []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(f"page error: {e}"))
    return page


@contextlib.contextmanager
def offline_context(browser, base: str):
    """A browser context that may reach only the site: every other request is refused and recorded
    (in ``page.outside`` of the page that asked)."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            with contextlib.suppress(Exception):
                r.request.frame.page.outside.append(r.request.url)
            r.abort()
    context.route("**/*", route)
    try:
        yield context
    finally:
        context.close()


def _wait_for_maths(page) -> None:
    page.wait_for_load_state("load")
    if page.evaluate("() => document.querySelector('main .math') !== null"):
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("() => MathJax.startup.promise")


# --------------------------------------------------------------------------- the crawl

@pytest.fixture(scope="module")
def crawl(browser, server):
    """Every HTML page reachable from the home page: {url: state} plus what went wrong while loading.

    TABS pages load at a time (the renderers work in parallel while the test waits on one of them).
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages, problems, started = {}, {}, time.monotonic()
    queue, seen = deque([server + "index.html"]), {server + "index.html"}
    with offline_context(browser, server) as context:
        tabs = [_watch(context.new_page(), server) for _ in range(TABS)]
        while queue:
            batch = [(tab, queue.popleft()) for tab in tabs if queue]
            responses = []
            for tab, url in batch:
                tab.console_errors.clear()
                tab.outside.clear()
                responses.append(tab.goto(url, wait_until="commit"))
            for (tab, url), response in zip(batch, responses):
                _wait_for_maths(tab)
                state = tab.evaluate(PAGE_STATE_JS)
                problems[url] = {"status": response.status if response else None,
                                 "console": list(tab.console_errors), "outside": list(tab.outside)}
                pages[url] = state
                for link in state["links"]:
                    target = link["href"].split("#", 1)[0]
                    if target.startswith(server) and target.endswith(".html") and target not in seen:
                        seen.add(target)
                        queue.append(target)
        tabs[0].goto(server + "notebooks/03_softmax_weighting.html")
        _wait_for_maths(tabs[0])
        tabs[0].screenshot(path=str(ARTIFACTS / "lesson03.png"))
    print(f"\nsite crawl: {len(pages)} pages in {time.monotonic() - started:.0f} s")
    return {"pages": pages, "problems": problems, "base": server}


def test_every_course_notebook_has_a_page_reachable_from_the_home_page(crawl):
    base = crawl["base"]
    missing = [p for _, p in course_pages() if base + _page_path(p) not in crawl["pages"]]
    assert not missing, f"no page reachable from the home page for {missing}"
    assert base + "instructors.html" in crawl["pages"]


def test_every_page_loads_without_console_errors(crawl):
    bad = {u: p for u, p in crawl["problems"].items() if p["status"] != 200 or p["console"]}
    assert not bad, bad


def test_no_page_asks_for_anything_outside_the_site(crawl):
    outside = {u: p["outside"] for u, p in crawl["problems"].items() if p["outside"]}
    assert not outside, f"requests to other hosts (the site must work offline): {outside}"


def test_maths_is_rendered_by_mathjax_everywhere(crawl):
    pages = crawl["pages"]
    lesson = pages[crawl["base"] + "notebooks/02_normalization_and_softmax.html"]
    assert len(lesson["math"]) > 10, "lesson 02 should show maths"
    for url, state in pages.items():
        unrendered = [m["text"] for m in state["math"] if not m["rendered"]]
        assert not unrendered, f"{url}: maths left as TeX: {unrendered[:5]}"
        raw = RAW_MATH.findall(state["prose"])
        assert not raw, f"{url}: raw TeX in the text: {raw[:5]}"


def test_every_image_loads_and_every_figure_has_alt_text(crawl):
    n_figures = 0
    for url, state in crawl["pages"].items():
        broken = [i["src"] for i in state["images"] if not i["ok"]]
        assert not broken, f"{url}: images that did not load: {broken}"
        no_alt = [i["src"] for i in state["images"] if not (i["alt"] or "").strip()]
        assert not no_alt, f"{url}: images without alt text: {no_alt}"
        for image in state["images"]:
            if image["output"]:
                n_figures += 1
                assert re.match(r"(Figure|\d+ figures)\b.{20,}", image["alt"]), f"{url}: alt {image['alt']!r}"
    assert n_figures >= 50, f"only {n_figures} figures on the whole site"


def test_every_notebook_page_has_open_in_colab_and_a_working_download(crawl):
    base = crawl["base"]
    for _, path in course_pages():
        state = crawl["pages"][base + _page_path(path)]
        hrefs = {link["href"] for link in state["links"]}
        assert colab_url(path) in hrefs, f"{path}: no Open in Colab link to {colab_url(path)}"
        downloads = [link["href"] for link in state["links"] if link["download"] and link["href"].endswith(".ipynb")]
        assert downloads, f"{path}: no download link"
        with urllib.request.urlopen(downloads[0], timeout=10) as response:
            assert response.read() == (ROOT / path).read_bytes(), f"{path}: the download is not the repository's notebook"


def test_no_internal_link_is_broken(crawl):
    base, pages = crawl["base"], crawl["pages"]
    checked, broken = {}, []
    for url, state in pages.items():
        targets = [(link["href"], link["raw"]) for link in state["links"]]
        targets += [(image["src"], image["src"]) for image in state["images"]]
        for href, raw in targets:
            if not href.startswith(base):
                continue
            target, _, anchor = href.partition("#")
            if target.endswith(".html") or target.endswith("/"):
                page = pages.get(target if target.endswith(".html") else target + "index.html")
                if page is None:
                    broken.append((url, raw, "page not reached"))
                elif anchor and urllib.parse.unquote(anchor) not in page["ids"]:
                    broken.append((url, raw, f"no #{anchor} on that page"))
                continue
            if target not in checked:
                try:
                    with urllib.request.urlopen(target, timeout=10) as response:
                        checked[target] = response.status
                except urllib.error.HTTPError as error:
                    checked[target] = error.code
            if checked[target] != 200:
                broken.append((url, raw, checked[target]))
    assert not broken, broken
    assert len(checked) >= 30, "the crawl found too few downloads and images to be trusted"


def test_the_navigation_follows_the_course_order(crawl):
    nav = crawl["pages"][crawl["base"] + "index.html"]["nav"]
    order = [_page_path(p) for _, p in course_pages()]
    shown = [h for h in nav if h in order]
    assert shown == order, f"navigation order:\n{shown}\nexpected:\n{order}"


def test_search_for_softmax_finds_lesson_03(browser, server):
    with offline_context(browser, server) as context:
        page = _watch(context.new_page(), server)
        page.goto(server + "search.html?q=softmax")
        hit = page.locator("#search-results a[href*='notebooks/03_softmax_weighting.html']").first
        hit.wait_for(timeout=PAGE_TIMEOUT)
        results = page.locator("#search-results li").count()
        assert results >= 3, f"only {results} results for softmax"
        assert not page.console_errors, page.console_errors
        assert not page.outside, page.outside
        page.screenshot(path=str(ARTIFACTS / "search.png"))
