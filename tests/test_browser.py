"""The course in a real browser: JupyterLab, started as `make lab` starts it, driven by Playwright.

What a student sees is checked where the other tests cannot reach it:

* lesson 03 runs top to bottom in JupyterLab without an error, and its temperature explorer is a
  *live* ipywidget (a slider wired to the kernel), not the static PNG fallback or "Loading widget...";
  moving the slider with the keyboard and the mouse changes the weights in its table and its plot;
* the untouched exercise ex02 runs without crashing and its checks answer ❌ "not implemented"; after
  typing a correct `softmax` into the answer cell's editor and re-running it, the check turns ✅ 5/5.

Needs Debian's Chromium at /usr/bin/chromium (`scripts/install_browser.sh` installs it; Playwright
never downloads a browser of its own here) and the `playwright` package from the dev extra.
Screenshots go to artifacts/browser/ (git-ignored), on success and on failure, with the server log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from chromium import launched_chromium, stop_process_group, wait_for_notebook_shown  # tests/chromium.py

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "browser"
LESSON = "notebooks/03_softmax_weighting.ipynb"
EXERCISE = "exercises/ex02_softmax.ipynb"

SERVER_START_TIMEOUT = 90      # s, JupyterLab answering /api/status
PAGE_TIMEOUT = 60_000          # ms, JupyterLab's page and the kernel becoming idle
RUN_ALL_TIMEOUT = 120          # s, "Run All Cells" on a 2-core machine (lesson 03 takes ~10 s)
ACTION_TIMEOUT = 30_000        # ms, any single click, key press or widget update

# A correct answer to ex02.q1, as a student would write it (the solution's algorithm).
SOFTMAX_ANSWER = '''def softmax(x, axis=-1, temperature=1.0):
    """Numerically stable softmax of x / temperature along axis."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    z = x.astype(np.float32 if dtype == np.float16 else dtype) / temperature
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(dtype)'''

# An error output looks like stderr in JupyterLab's DOM (both carry data-mime-type
# "application/vnd.jupyter.stderr"), so it is told apart by its text: a traceback, or the
# "SomethingError: ..." line IPython prints (syntax errors have no "Traceback" line).
# Warnings printed to stderr ("...py:12: UserWarning: ...") do not start a line with an error name.
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception|Interrupt)\b.*:", re.M)

# Page-side probe of the notebook: the kernel indicator and every code cell's prompt.
# contentVisibility, JupyterLab 4.6's default windowing mode, keeps every cell in the DOM.
NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = Array.from(panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
                       .map(e => e.textContent.trim());
  const stderr = Array.from(panel.querySelectorAll(
      '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')).map(e => e.textContent);
  return {
    status: indicator ? indicator.getAttribute('data-status') : null,
    prompts: prompts,
    running: prompts.filter(p => p.includes('*')).length,
    executed: prompts.filter(p => /^\\[\\d+\\]:$/.test(p)).length,
    stderr: stderr,
  };
}"""


# --------------------------------------------------------------------------- the server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    def __init__(self, url: str, token: str, root: Path, process: subprocess.Popen, log: Path):
        self.url, self.token, self.root, self.process, self.log = url, token, root, process, log

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def page_url(self, notebook: str) -> str:
        # `reset` starts from an empty workspace, so a tab left open by an earlier test is not restored.
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"


def _lab_command(root: Path, args: list[str]) -> list[str]:
    """`make lab` itself, serving ``root``, with ``args`` as LAB_ARGS, when the tests run in the venv `make` built.

    So the Makefile's own command line is what is tested, --allow-root for root included
    (`make -o` keeps make from reinstalling the venv). Elsewhere, the venv's own `jupyter lab`.
    """
    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    if shutil.which("make") and stamp.exists() and venv.resolve() == (ROOT / ".venv").resolve():
        return ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed", "lab", f"LAB_ROOT={root}",
                f"LAB_ARGS={' '.join(args)}"]
    jupyter = Path(sys.executable).with_name("jupyter")
    command = [str(jupyter), "lab"] if jupyter.exists() else [sys.executable, "-m", "jupyterlab"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    return command + [f"--ServerApp.root_dir={root}", "--LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb"] + args


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab started the way `make lab` starts it, on a free port with a random token.

    `make lab` serves the repository itself (--ServerApp.root_dir=<repo>). Running cells and
    editing answers would rewrite tracked notebooks, so the test serves a temporary copy of the
    repository's notebooks/ and exercises/ instead: same files, same relative paths.
    Jupyter's config, runtime and user-data dirs are temporary too, so neither the user's settings
    nor their kernels leak in; the venv's share/jupyter (the ipywidgets labextension and the
    python3 kernel) is still found through sys.prefix.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "course"
    root.mkdir()
    for folder in ("notebooks", "exercises"):
        shutil.copytree(ROOT / folder, root / folder)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "config" / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "config" / "lab" / "workspaces"),
        IPYTHONDIR=str(base / "ipython"),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    # Don't ask "Would you like to get notified about official Jupyter news?": the toast would
    # cover the screenshots, and the answer would make JupyterLab reach out to the network.
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))

    port, token = _free_port(), secrets.token_hex(24)
    command = _lab_command(root, [
        "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
    ])
    log = ARTIFACTS / "jupyter_server.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(f"http://127.0.0.1:{port}", token, root, process, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {process.returncode} before answering.\n"
                            f"command: {' '.join(command)}\nserver log:\n{server.log_tail()}")
            try:
                server.api("/api/status")
                break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer /api/status within {SERVER_START_TIMEOUT} s.\n"
                            f"command: {' '.join(command)}\nserver log:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(server)


def _stop(server: LabServer) -> None:
    # Kernels run in sessions of their own, so shut them down through the API before stopping
    # the server's process group (SIGTERM lets JupyterLab clean up; SIGKILL if it hangs).
    with contextlib.suppress(Exception):
        for kernel in server.api("/api/kernels"):
            with contextlib.suppress(Exception):
                server.api(f"/api/kernels/{kernel['id']}", method="DELETE")
    stop_process_group(server.process, term_wait=15, kill_wait=5)


# --------------------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium(pytest.fail)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(ACTION_TIMEOUT)
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(f"page error: {error}"))
    try:
        yield page
    finally:
        context.close()


class Steps:
    """Names the step that failed, with a screenshot (taken also when every step passed)."""

    def __init__(self, page, lab: LabServer, screenshot: Path):
        self.page, self.lab, self.screenshot = page, lab, screenshot

    @contextlib.contextmanager
    def step(self, name: str):
        try:
            yield
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            self.shoot()
            console = "\n".join(self.page.console_errors[-10:]) or "(none)"
            raise AssertionError(
                f"browser step failed: {name}\n{type(error).__name__}: {error}\n"
                f"screenshot: {self.screenshot}\nserver log: {self.lab.log}\n"
                f"browser console errors (last 10):\n{console}\nserver log tail:\n{self.lab.log_tail(15)}"
            ) from error

    def shoot(self) -> None:
        with contextlib.suppress(Exception):
            self.screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(self.screenshot), full_page=False)


# --------------------------------------------------------------------------- notebook helpers

def open_notebook(page, lab: LabServer, notebook: str, n_cells: int) -> None:
    """Open `notebook` in JupyterLab, wait until all its `n_cells` cells are on the page and its
    kernel is started and idle."""
    page.goto(lab.page_url(notebook), timeout=PAGE_TIMEOUT)
    wait_for_notebook_shown(page, n_cells, PAGE_TIMEOUT)
    # ... and the server agrees: the notebook has a session whose kernel is idle.
    deadline = time.monotonic() + PAGE_TIMEOUT / 1000
    while True:
        sessions = [s for s in lab.api("/api/sessions") if s.get("path") == notebook]
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            return
        assert time.monotonic() < deadline, f"no idle kernel for {notebook}; sessions: {sessions}"
        time.sleep(0.25)


def menu(page, *path: str) -> None:
    """Click through the menu bar, e.g. menu(page, "Run", "Run All Cells")."""
    page.locator(".lm-MenuBar").get_by_role("menuitem", name=path[0], exact=True).click()
    for item in path[1:]:
        # Match the item's label alone: its accessible name also holds the shortcut ("Save Notebook Ctrl+S").
        label = page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$"))
        page.locator(".lm-Menu .lm-Menu-item[role='menuitem']", has=label).click()


def notebook_state(page) -> dict:
    state = page.evaluate(NOTEBOOK_STATE_JS)
    assert state is not None, "no notebook panel on the page"
    return state


def errors_in(state: dict) -> list[str]:
    return [text for text in state["stderr"] if ERROR_TEXT.search(text)]


def run_all(page, n_code_cells: int) -> dict:
    """Clear all outputs, run all cells and wait until every code cell has run (or one failed).

    Clearing first means every prompt starts at "[ ]:", so "all prompts numbered" cannot be
    confused with the outputs stored in the file. JupyterLab stops "Run All" at a failing cell.
    """
    menu(page, "Edit", "Clear Outputs of All Cells")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt'))"
        ".every(e => !/\\d/.test(e.textContent))", timeout=ACTION_TIMEOUT)
    menu(page, "Run", "Run All Cells")
    deadline, settled = time.monotonic() + RUN_ALL_TIMEOUT, 0
    while True:
        state = notebook_state(page)
        finished = state["executed"] == n_code_cells or errors_in(state)
        settled = settled + 1 if (finished and state["running"] == 0 and state["status"] == "idle") else 0
        if settled >= 2:                       # the same answer twice, 0.5 s apart
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"Run All did not finish in {RUN_ALL_TIMEOUT} s: kernel {state['status']}, "
                                 f"{state['executed']}/{n_code_cells} code cells executed, "
                                 f"{state['running']} running; prompts: {' '.join(state['prompts'])}")
        time.sleep(0.5)


def assert_ran_cleanly(state: dict, n_code_cells: int) -> None:
    errors = errors_in(state)
    for text in state["stderr"]:
        if text not in errors:
            print(f"stderr output (allowed): {text[:300]!r}")
    assert not errors, "error output in the notebook:\n" + "\n---\n".join(e[-1500:] for e in errors)
    unexecuted = [i for i, p in enumerate(state["prompts"]) if not re.fullmatch(r"\[\d+\]:", p)]
    assert state["executed"] == n_code_cells, f"code cells not executed (indices {unexecuted}): {state['prompts']}"


def cell(page, index: int):
    """The notebook's cell number `index` (counting markdown cells, as in the .ipynb file)."""
    return page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)


def output_text(locator) -> str:
    return locator.locator(".jp-Cell-outputArea").inner_text()


def read_weights(table) -> list[tuple[str, float]]:
    """The explorer's readout: <table class='temperature-weights'> cells "token: <b>0.123</b>"."""
    pairs = []
    for text in table.locator("td").all_inner_texts():
        label, _, value = text.rpartition(":")
        pairs.append((label.strip(), float(value)))
    return pairs


def save(page, lab: LabServer, notebook: str) -> nbformat.NotebookNode:
    """File > Save Notebook, then read the saved file back."""
    path = lab.root / notebook
    before = path.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + ACTION_TIMEOUT / 1000
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, "File > Save Notebook did not write the notebook"
        time.sleep(0.2)
    page.locator(".lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)").first.wait_for()
    return nbformat.read(path, as_version=4)


def find_cell(nb, predicate, what: str) -> int:
    for index, c in enumerate(nb.cells):
        if predicate(c):
            return index
    raise AssertionError(f"{what}: no such cell in the notebook")


# --------------------------------------------------------------------------- the tests

def test_make_lab_serves_the_course_as_any_user_root_included(lab):
    # The fixture started `make lab` (when the tests run in make's venv); as root, the Makefile
    # itself must have passed --allow-root, which JupyterLab refuses to start without.
    listing = {item["name"] for item in lab.api("/api/contents/notebooks")["content"]}
    assert "00_start_here.ipynb" in listing and "03_softmax_weighting.ipynb" in listing
    if hasattr(os, "geteuid") and os.geteuid() == 0 and Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
        assert "starting JupyterLab with --allow-root" in lab.log.read_text(errors="replace"), lab.log_tail()


def test_lesson03_runs_and_its_temperature_explorer_is_live(lab, page):
    source = nbformat.read(lab.root / LESSON, as_version=4)  # the served copy
    n_code = sum(c.cell_type == "code" for c in source.cells)
    explorer_index = find_cell(source, lambda c: c.cell_type == "code" and "= temperature_explorer(" in c.source,
                               "the temperature explorer")
    steps = Steps(page, lab, ARTIFACTS / "lesson03.png")

    with steps.step("open lesson 03 in JupyterLab and wait for an idle kernel"):
        open_notebook(page, lab, LESSON, len(source.cells))
        assert page.locator(".jp-NotebookPanel .jp-CodeCell").count() == n_code

    with steps.step("Run > Run All Cells and wait until every cell has run"):
        state = run_all(page, n_code)

    with steps.step("no cell shows an error (stderr warnings are allowed)"):
        assert_ran_cleanly(state, n_code)

    explorer = cell(page, explorer_index)
    table = explorer.locator("table.temperature-weights")
    slider = explorer.locator(".widget-slider")
    with steps.step("the temperature explorer renders as a live ipywidget"):
        explorer.scroll_into_view_if_needed()
        outputs = explorer.locator(".jp-Cell-outputArea > .jp-OutputArea-child")
        assert outputs.count() == 1, f"expected one output, got {outputs.count()}: {output_text(explorer)!r}"
        text = output_text(explorer)
        assert "Loading widget" not in text and "Error displaying widget" not in text, text
        assert "TemperatureExplorer(" not in text, f"only the text repr was rendered: {text!r}"
        fallback = explorer.locator(
            ".jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output[data-mime-type='image/png']")
        assert slider.count() == 1, (
            "no ipywidgets slider in the explorer's output: the widget frontend "
            f"(@jupyter-widgets/jupyterlab-manager) is missing or failed. Output text: {text[:300]!r}; "
            f"static fallback PNG shown instead: {fallback.count() > 0}")
        assert explorer.locator(".jupyter-widgets.widget-vbox").count() == 1
        # The slider is the widget's, and the PNG inside the widget is its Output widget's plot.
        assert fallback.count() == 0, "the static fallback PNG is shown instead of the widget"
        table.wait_for()

    def snapshot():
        return (table.inner_text(), explorer.locator(".widget-output img").first.get_attribute("src"),
                slider.locator(".widget-readout").inner_text().strip())

    with steps.step("after Run All the explorer shows the weights at T = 1.00"):
        weights = read_weights(table)
        tokens = [label for label, _ in weights]
        assert tokens == ["the", "cat", "sat", "on", "the", "mat"], tokens
        values = [v for _, v in weights]
        assert abs(sum(values) - 1.0) < 0.01, values
        assert max(weights, key=lambda p: p[1])[0] == "cat", weights
        assert snapshot()[2] == "1.00", f"slider readout {snapshot()[2]!r}"
        assert explorer.locator(".widget-output img").count() == 1, "the explorer's plot is missing"

    handle = slider.locator(".noUi-handle")

    def move(key_or_action, what: str):
        before = snapshot()
        key_or_action()
        # The widget replaces its table and its <img> on every update: query them afresh each time.
        page.wait_for_function(
            """([cell, table, src]) => {
                 const t = cell.querySelector('table.temperature-weights');
                 const img = cell.querySelector('.widget-output img');
                 return t && img && t.innerText !== table && img.getAttribute('src') !== src;
               }""", arg=[explorer.element_handle(), before[0], before[1]], timeout=ACTION_TIMEOUT)
        # A drag sends several values (continuous_update): wait until the kernel has answered the
        # last one, i.e. the kernel is idle and the table and the plot stay the same for a second.
        after, stable, deadline = snapshot(), 0, time.monotonic() + ACTION_TIMEOUT / 1000
        while stable < 4:
            assert time.monotonic() < deadline, f"{what}: the explorer kept changing for {ACTION_TIMEOUT} ms"
            time.sleep(0.25)
            now = snapshot()
            idle = notebook_state(page)["status"] == "idle"
            stable = stable + 1 if (now == after and idle) else 0
            after = now
        assert after[0] != before[0] and after[1] != before[1], f"{what}: table or plot unchanged"
        return read_weights(table), after[2]

    with steps.step("press End on the slider: T = 20, the weights flatten toward 1/6"):
        handle.focus()
        weights, readout = move(lambda: page.keyboard.press("End"), "End")
        assert readout == "20.00", f"slider readout {readout!r}"
        values = [v for _, v in weights]
        assert max(values) - min(values) < 0.05 and all(abs(v - 1 / 6) < 0.03 for v in values), weights
        assert abs(sum(values) - 1.0) < 0.01, values

    with steps.step("press Home on the slider: T = 0.05, the weight goes to 'cat'"):
        weights, readout = move(lambda: page.keyboard.press("Home"), "Home")
        assert readout == "0.05", f"slider readout {readout!r}"
        assert dict(weights)["cat"] > 0.99, weights

    with steps.step("drag the slider's handle with the mouse to the middle: T near 1"):
        track = slider.locator(".noUi-base").bounding_box()
        box = handle.bounding_box()
        assert track and box, "slider not visible"

        def drag():
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] / 2, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()

        weights, readout = move(drag, "mouse drag")
        assert 0.6 < float(readout) < 1.6, f"slider readout {readout!r} after dragging to the middle"
        assert 0.3 < dict(weights)["cat"] < 0.7, weights

    with steps.step("File > Save Notebook saves it with no error output and a widget view for the explorer"):
        saved = save(page, lab, LESSON)
        errors = [o for c in saved.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"error outputs in the saved notebook: {[(o.ename, o.evalue) for o in errors]}"
        data = saved.cells[explorer_index].outputs[0].get("data", {})
        assert "application/vnd.jupyter.widget-view+json" in data, list(data)

    steps.shoot()


def test_ex02_feedback_turns_green_after_typing_a_correct_softmax(lab, page):
    source = nbformat.read(lab.root / EXERCISE, as_version=4)
    n_code = sum(c.cell_type == "code" for c in source.cells)
    answer_index = find_cell(source, lambda c: "answer" in c.metadata.get("tags", []), "the first answer cell")
    assert "def softmax(" in source.cells[answer_index].source, "the first answer cell must define softmax"
    check_index = find_cell(source, lambda c: "check" in c.metadata.get("tags", []), "the first check cell")
    assert check_index == answer_index + 1 and 'check("ex02.q1")' in source.cells[check_index].source
    check_indices = [i for i, c in enumerate(source.cells) if "check" in c.metadata.get("tags", [])]
    steps = Steps(page, lab, ARTIFACTS / "ex02.png")

    with steps.step("open the untouched exercise ex02 and wait for an idle kernel"):
        open_notebook(page, lab, EXERCISE, len(source.cells))

    with steps.step("Run > Run All Cells on the untouched exercise: no crash"):
        state = run_all(page, n_code)
        assert_ran_cleanly(state, n_code)

    check_cell = cell(page, check_index)
    with steps.step("every check cell answers ❌; q1 says softmax is not implemented, 0/5"):
        for index in check_indices:
            text = output_text(cell(page, index))
            assert "❌" in text and "✅" not in text, f"cell {index}: {text!r}"
        text = output_text(check_cell)
        assert "not implemented" in text and "0/5 points" in text, text

    answer = cell(page, answer_index)
    editor = answer.locator(".cm-content")
    with steps.step("replace the answer cell's code by typing into its editor"):
        editor.click()                                   # edit mode in this cell
        page.keyboard.press("ControlOrMeta+a")           # CodeMirror: select the whole cell
        # insert_text sends the text as one input event (like a paste), so CodeMirror's auto-indent
        # and bracket auto-closing, which act on single key presses, leave it as written.
        page.keyboard.insert_text(SOFTMAX_ANSWER)
        typed = "\n".join(editor.locator(".cm-line").all_inner_texts())
        assert typed.replace("\u200b", "") == SOFTMAX_ANSWER, f"the editor holds:\n{typed}"

    with steps.step("Shift+Enter runs the answer cell, Shift+Enter again runs its check cell"):
        before = check_cell.locator(".jp-InputPrompt").inner_text().strip()
        page.keyboard.press("Shift+Enter")
        page.keyboard.press("Shift+Enter")
        page.wait_for_function(
            "([prompt, before]) => /^\\[\\d+\\]:$/.test(prompt.textContent.trim()) && prompt.textContent.trim() !== before",
            arg=[check_cell.locator(".jp-InputPrompt").element_handle(), before], timeout=ACTION_TIMEOUT)
        state = notebook_state(page)
        assert not errors_in(state), errors_in(state)
        assert re.fullmatch(r"\[\d+\]:", answer.locator(".jp-InputPrompt").inner_text().strip())

    with steps.step("the feedback for ex02.q1 turns ✅ on every check, 5/5 points"):
        text = output_text(check_cell)
        assert "5/5 points" in text, text
        assert "❌" not in text and text.count("✅") >= 5, text
        # The other questions are still unanswered.
        assert "❌" in output_text(cell(page, check_indices[1]))

    steps.shoot()
