"""A JupyterHub for trying the course's nbgitpuller links on one machine (what tests/test_hub.py runs).

    COURSE_HUB_STATE=/tmp/course-hub .venv/bin/jupyterhub -f docs/jupyterhub_config.py

then print the links with `.venv/bin/attention-lessons links --hub http://127.0.0.1:8000` and open one:
log in with any user name (and any password unless COURSE_HUB_PASSWORD is set); the hub starts that
user's JupyterLab, nbgitpuller clones the course into the user's home and the notebook opens.

It needs, in the environment that runs it (`make install` puts them into .venv): `jupyterhub`,
`nbgitpuller` (a Jupyter server extension, enabled when installed), JupyterLab and the course's package;
and JupyterHub's proxy, `configurable-http-proxy` from npm (scripts/install_node_packages.sh installs the
pinned version into node/node_modules, which this file finds; or `npm install -g configurable-http-proxy`).

**For a trial or a test only.** The dummy authenticator lets anyone in, and SimpleLocalProcessSpawner runs
every user's server as the hub's own user (root included), with no isolation between users. Everything
listens on 127.0.0.1 only. For a class, keep the parts that matter to the course (nbgitpuller and the
course's dependencies in the single-user environment; the links) and run a production hub: The Littlest
JupyterHub (one server, real users) or Zero to JupyterHub with Kubernetes, with their authenticators.

Settings (environment variables, defaults in brackets):
COURSE_HUB_STATE [./course-hub]: database, cookie secret, proxy pid file and the users' homes (home/<user>);
COURSE_HUB_PORT [8000]: the hub's address is http://127.0.0.1:PORT; COURSE_HUB_API_PORT [8081] and
COURSE_HUB_PROXY_API_PORT [8001]: internal ports; COURSE_HUB_PROXY: the configurable-http-proxy command;
COURSE_HUB_PASSWORD: a shared password (unset: any); COURSE_HUB_IDLE_SHUTDOWN [3600]: seconds after which
a user's server with no activity stops itself.
"""

import os
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("COURSE_HUB_STATE", "course-hub")).resolve()
STATE.mkdir(parents=True, exist_ok=True)
BIN = Path(sys.executable).parent        # the environment running the hub: jupyterhub-singleuser is there too

# Only this machine can reach the hub, its API and the proxy's API.
c.JupyterHub.bind_url = f"http://127.0.0.1:{int(os.environ.get('COURSE_HUB_PORT', '8000'))}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("COURSE_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(os.environ.get('COURSE_HUB_PROXY_API_PORT', '8001'))}"
local_proxy = REPOSITORY_ROOT / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
proxy = os.environ.get("COURSE_HUB_PROXY") or (str(local_proxy) if local_proxy.exists()
                                                 else shutil.which("configurable-http-proxy") or "configurable-http-proxy")
c.ConfigurableHTTPProxy.command = [proxy]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")

c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
# When the hub stops, it stops the users' servers and the proxy it started.
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# Anyone may log in (trial only); with COURSE_HUB_PASSWORD set, only with that password.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
if os.environ.get("COURSE_HUB_PASSWORD"):
    c.DummyAuthenticator.password = os.environ["COURSE_HUB_PASSWORD"]

# Each user's JupyterLab runs as the hub's user, in STATE/home/<user> (created on first start).
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "home" / "{username}")
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = "/lab"
c.Spawner.environment = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2"}
c.Spawner.args = [f"--ServerApp.shutdown_no_activity_timeout={int(os.environ.get('COURSE_HUB_IDLE_SHUTDOWN', '3600'))}",
                  "--MappingKernelManager.cull_idle_timeout=1800"]
if hasattr(os, "geteuid") and os.geteuid() == 0:
    c.Spawner.args.append("--allow-root")   # containers and CI run as root; Jupyter refuses root without it
c.Spawner.start_timeout = 180            # a 2-core machine under load starts JupyterLab slowly
c.Spawner.http_timeout = 180
