"""Headless Debian Chromium driven by playwright, and the servers it talks to: shared by the
browser, website and hub tests.

Never downloads a browser; CHROMIUM=/path/to/chromium picks another binary.
"""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which
# this course's offline machines refuse; --no-sandbox because tests may run as root.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launched_chromium(missing):
    """Yield a launched Chromium (for a module-scoped fixture) and close it afterwards.

    ``missing(reason)`` is called when playwright or Chromium is absent: ``pytest.fail`` or a
    function that skips unless the tool is required.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        missing("the `playwright` package is missing: install the dev extra (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"no Chromium at {CHROMIUM}: run scripts/install_browser.sh (or set CHROMIUM=/path/to/chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_notebook_shown(page, n_cells: int, timeout_ms: float) -> None:
    """Wait until JupyterLab's open notebook shows all its ``n_cells`` cells (a long notebook's cells
    are added to the page in batches) and its kernel indicator says idle."""
    page.wait_for_function(
        "n => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length === n",
        arg=n_cells, timeout=timeout_ms)
    page.locator(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=timeout_ms)


def stop_process_group(process, term_wait: float, kill_wait: float) -> None:
    """Stop the server ``process`` started in a session of its own (``start_new_session=True``) with
    its whole process group: SIGTERM lets it clean up, SIGKILL if it hangs."""
    import contextlib
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, term_wait), (signal.SIGKILL, kill_wait)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
