"""A real JupyterHub: a link printed by `attention-lessons links --hub` pulls the course and opens it.

The test starts JupyterHub on 127.0.0.1 with the configuration the instructors' guide ships
(docs/jupyterhub_config.py: dummy authenticator, SimpleLocalProcessSpawner running as the current user,
root included, configurable-http-proxy from node/node_modules, nbgitpuller installed in this environment),
with the course served from a local clone over file:// (`links --repo file://…`). In Chromium it opens the
link printed for lesson 03, logs in as a student, and checks that

* nbgitpuller cloned the course into the student's home (the clone's HEAD is the served commit),
* JupyterLab opened lesson 03 from that clone, with a live kernel (a line typed into the setup cell runs),
* the hub, the proxy and the student's server all stop at the end (the hub also runs under `timeout`,
  and the student's server stops itself when idle, so nothing outlives a killed test run).

Offline: nothing but 127.0.0.1 is reached (other requests are refused and reported, except the Colab
badge image in the lesson's own title cell, which is refused silently). Needs git, node,
Debian's Chromium (scripts/install_browser.sh) and node/node_modules (scripts/install_node_packages.sh).
Where they are missing the test is skipped with the reason, unless ATTENTION_LESSONS_REQUIRE_BROWSER=1
(set by `make test`): then it fails. Screenshots and the hub's log go to artifacts/hub/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from chromium import launched_chromium, stop_process_group, wait_for_notebook_shown  # tests/chromium.py

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "docs" / "jupyterhub_config.py"
PROXY = ROOT / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
ARTIFACTS = ROOT / "artifacts" / "hub"
LESSON = "notebooks/03_softmax_weighting.ipynb"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
USER = "student"

HUB_START_TIMEOUT = 90        # s, the hub answering /hub/api
HUB_LIFETIME = 900            # s, `timeout` stops the hub after this even if the test is killed
SPAWN_AND_PULL_TIMEOUT = 240_000   # ms, log in → server started → course cloned → notebook open
KERNEL_TIMEOUT = 120_000      # ms, the notebook's kernel idle / its setup cell run


def _require(reason: str) -> None:
    if os.environ.get("ATTENTION_LESSONS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (ATTENTION_LESSONS_REQUIRE_BROWSER=1: required here)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _processes_with(marker: str) -> list[int]:
    """Ids of this machine's processes whose environment or command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            blob = (entry / "environ").read_bytes() + b"\0" + (entry / "cmdline").read_bytes()
            if marker.encode() in blob:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def course_repository(tmp_path_factory) -> Path:
    """A clone of this repository's HEAD on branch main, served over file:// (its folder is named like
    the public repository, so the student's clone gets the same folder name)."""
    if shutil.which("git") is None:
        _require("git is missing")
    clone = tmp_path_factory.mktemp("served") / "attention-lessons"
    _git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone))
    _git("checkout", "--quiet", "-B", "main", cwd=clone)
    assert (clone / LESSON).exists(), f"{LESSON} is not committed in HEAD"
    return clone


class Hub:
    def __init__(self, url: str, state: Path, process: subprocess.Popen, log: Path, marker: str):
        self.url, self.state, self.process, self.log, self.marker = url, state, process, log, marker

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no hub log)"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """JupyterHub with docs/jupyterhub_config.py on free ports of 127.0.0.1; stopped (with its proxy and
    the users' servers) at the end, then checked to be gone."""
    missing = [name for name in ("jupyterhub", "nbgitpuller") if importlib.util.find_spec(name) is None]
    if missing:
        _require(f"{', '.join(missing)} not installed: install the dev extra (pip install -e '.[dev]')")
    if shutil.which("node") is None or not PROXY.exists():
        _require(f"no configurable-http-proxy at {PROXY} (or no node): run scripts/install_node_packages.sh")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    state = tmp_path_factory.mktemp("hub")
    port, api_port, proxy_api_port = _free_port(), _free_port(), _free_port()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(COURSE_HUB_STATE=str(state), COURSE_HUB_PORT=str(port), COURSE_HUB_API_PORT=str(api_port),
               COURSE_HUB_PROXY_API_PORT=str(proxy_api_port), COURSE_HUB_PROXY=str(PROXY),
               COURSE_HUB_IDLE_SHUTDOWN="600", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    env.pop("COURSE_HUB_PASSWORD", None)
    jupyterhub = bin_dir / "jupyterhub"
    command = ["timeout", "--kill-after=20", str(HUB_LIFETIME),
               str(jupyterhub) if jupyterhub.exists() else sys.executable, *([] if jupyterhub.exists() else ["-m", "jupyterhub"]),
               "-f", str(CONFIG)]
    log = ARTIFACTS / "jupyterhub.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(command, cwd=state, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    hub = Hub(f"http://127.0.0.1:{port}", state, process, log, marker=f"127.0.0.1:{api_port}")
    try:
        deadline = time.monotonic() + HUB_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterHub exited with code {process.returncode} before answering.\n{hub.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                with urllib.request.urlopen(f"{hub.url}/hub/api", timeout=5) as response:
                    assert "version" in json.loads(response.read())
                break
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterHub did not answer {hub.url}/hub/api within {HUB_START_TIMEOUT} s.\n{hub.log_tail()}")
            time.sleep(0.5)
        yield hub
    finally:
        _stop(hub)


def _stop(hub: Hub) -> None:
    # SIGTERM lets JupyterHub stop the users' servers and the proxy (cleanup_servers/cleanup_proxy).
    stop_process_group(hub.process, term_wait=60, kill_wait=10)
    # The users' servers and the proxy run in sessions of their own; they hold the hub's API address.
    deadline = time.monotonic() + 20
    while _processes_with(hub.marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _processes_with(hub.marker)
    for pid in left:        # ours: started by this hub (they carry its API port)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    hub.leftovers = left


@pytest.fixture(scope="module")
def browser():
    yield from launched_chromium(_require)


def _printed_link(hub_url: str, repository: Path) -> str:
    """The link `attention-lessons links --hub URL --repo file://…` prints for lesson 03."""
    cli = Path(sys.executable).with_name("attention-lessons")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "attention_lessons.cli"]
    done = subprocess.run(command + ["links", "--hub", hub_url, "--repo", repository.as_uri(), "--what", "lessons"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    links = dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)
    return links[LESSON]


def test_a_printed_hub_link_pulls_the_course_into_the_home_and_opens_the_lesson_with_a_kernel(
        hub, browser, course_repository):
    started = time.monotonic()
    link = _printed_link(hub.url, course_repository)
    assert link.startswith(f"{hub.url}/hub/user-redirect/git-pull?"), link
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    outside, errors = [], []

    def route(r):
        if r.request.url.startswith("http://127.0.0.1:") or r.request.url.startswith("data:"):
            r.continue_()
        elif r.request.url == COLAB_BADGE:
            r.abort()          # the lesson's own title cell shows Colab's badge: not the hub's doing
        else:
            outside.append(r.request.url)
            r.abort()
    context.route("**/*", route)
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Don't ask "Would you like to get notified about official Jupyter news?" (it would cover the
    # screenshot, and answering would make JupyterLab reach out to the network): the student's settings.
    settings = hub.state / "home" / USER / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    step = "open the printed link"
    try:
        page.goto(link)
        step = "the hub asks the student to log in"
        page.wait_for_url(re.compile(r"/hub/login"), timeout=30_000)
        page.fill("#username_input", USER)
        page.fill("#password_input", "any password (dummy authenticator)")
        page.click("#login_submit")
        step = "log in → the student's server starts → nbgitpuller clones → lesson 03 opens in JupyterLab"
        folder = course_repository.name
        page.wait_for_url(re.compile(rf"/user/{USER}/lab/tree/{folder}/{re.escape(LESSON)}"),
                          timeout=SPAWN_AND_PULL_TIMEOUT)
        step = "the course was cloned into the student's home, at the served commit"
        clone = hub.state / "home" / USER / folder
        assert (clone / LESSON).read_bytes() == (course_repository / LESSON).read_bytes()
        assert _git("rev-parse", "HEAD", cwd=clone) == _git("rev-parse", "HEAD", cwd=course_repository)
        assert _git("remote", "get-url", "origin", cwd=clone) == course_repository.as_uri()
        step = "the server has a session for the lesson from the clone, and its kernel becomes idle"
        deadline = time.monotonic() + KERNEL_TIMEOUT / 1000
        while True:
            # As JupyterLab itself asks: with the login cookie and the _xsrf cookie echoed in a header.
            sessions = page.evaluate("""url => {
                const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
                return fetch(url, {headers: {'X-XSRFToken': decodeURIComponent(xsrf)}}).then(r => r.json());
            }""", f"/user/{USER}/api/sessions")
            session = [s for s in sessions if s["path"] == f"{folder}/{LESSON}"]
            if session and session[0]["kernel"]["execution_state"] == "idle":
                break
            assert time.monotonic() < deadline, f"no idle kernel for {folder}/{LESSON}; sessions: {sessions}"
            time.sleep(0.5)
        step = "JupyterLab shows every cell of the lesson and an idle kernel"
        n_cells = len(json.loads((clone / LESSON).read_text())["cells"])
        wait_for_notebook_shown(page, n_cells, KERNEL_TIMEOUT)
        step = "the kernel runs code: a line typed at the end of the setup cell prints 42 (Shift+Enter)"
        # The stored notebook already shows "[1]:" and no output on this cell, so the proof is an output
        # only a live kernel can produce. insert_text types as a paste (no auto-indent into the `if`).
        setup = page.locator(".jp-NotebookPanel .jp-CodeCell").first
        setup.locator(".cm-content").click()
        page.keyboard.press("ControlOrMeta+End")
        page.keyboard.insert_text("\nprint('kernel says', 6 * 7)")
        page.keyboard.press("Shift+Enter")
        setup.locator(".jp-OutputArea-output", has_text="kernel says 42").wait_for(timeout=KERNEL_TIMEOUT)
        assert not outside, f"requests outside 127.0.0.1: {outside}"
        page.screenshot(path=str(ARTIFACTS / "lesson03.png"))
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
        raise AssertionError(f"hub step failed: {step}\n{type(error).__name__}: {error}\nurl: {page.url}\n"
                             f"page errors: {errors[-5:]}\nrequests outside 127.0.0.1: {outside[:5]}\n"
                             f"screenshot: {ARTIFACTS / 'failure.png'}\nhub log tail:\n{hub.log_tail()}") from error
    finally:
        context.close()
    print(f"\nhub: link → lesson 03 open with a kernel in {time.monotonic() - started:.0f} s")


def test_the_hub_and_everything_it_started_stop_at_the_end(hub, request):
    # Runs last in this module: stop the hub now (the fixture's finaliser does the same, idempotently).
    _stop(hub)
    assert hub.process.returncode is not None, "the hub is still running"
    assert not hub.leftovers, f"processes of the hub still running after it stopped (killed now): {hub.leftovers}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(hub.url.rsplit(":", 1)[1])), timeout=2).close()


# --------------------------------------------------------------------------- the links (no hub needed)

def test_links_repo_option_points_hub_links_at_another_repository():
    from urllib.parse import parse_qs, urlsplit

    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "links", "--hub", "http://127.0.0.1:8000",
                           "--repo", "file:///srv/mirror/attention-lessons.git", "--branch", "course-2026",
                           "--what", "lessons"], capture_output=True, text=True, cwd=ROOT, check=True)
    path, link = done.stdout.splitlines()[0].split("\t")
    query = parse_qs(urlsplit(link).query)
    assert query["repo"] == ["file:///srv/mirror/attention-lessons.git"] and query["branch"] == ["course-2026"]
    # nbgitpuller names the student's folder after the repository, without ".git"
    assert query["urlpath"] == [f"lab/tree/attention-lessons/{path}"]


def test_links_default_to_the_public_repository():
    from attention_lessons.course import BRANCH, REPOSITORY, nbgitpuller_url

    assert nbgitpuller_url("http://hub", LESSON) == nbgitpuller_url("http://hub", LESSON, REPOSITORY, BRANCH)
    assert "repo=https%3A%2F%2Fgithub.com%2F" in nbgitpuller_url("http://hub", LESSON)


def test_links_repo_without_hub_is_refused():
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "links", "--repo", "file:///x/attention-lessons"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "--hub" in done.stderr and not done.stdout


def test_a_repository_that_is_not_a_git_url_is_a_value_error():
    from attention_lessons.course import nbgitpuller_url

    with pytest.raises(ValueError, match="repository"):
        nbgitpuller_url("http://hub", LESSON, repository="/srv/attention-lessons")
