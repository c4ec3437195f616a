#!/usr/bin/env bash
# Install the Node packages the course's website and tests need into node/node_modules (git-ignored),
# exactly as pinned in node/package-lock.json:
#   configurable-http-proxy  JupyterHub's proxy (tests/test_hub.py, docs/jupyterhub_config.py)
#   mathjax                  the website's maths, served from the site itself (make site)
# Idempotent: does nothing when node_modules already matches the lock. Needs node >= 20 and npm
# (Debian: apt-get install nodejs npm); reaches only the npm registry, and only when installing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$HERE/node"
STAMP="$NODE_DIR/node_modules/.installed-lock"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "install_node_packages: node and npm are needed (Debian: sudo apt-get install -y nodejs npm;" >&2
    echo "install_node_packages: or https://nodejs.org, version 20 or newer)." >&2
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
    echo "install_node_packages: node $(node --version) is too old: configurable-http-proxy needs node >= 20." >&2
    exit 1
fi

if [ -f "$STAMP" ] && cmp -s "$STAMP" "$NODE_DIR/package-lock.json"; then
    echo "install_node_packages: node/node_modules is up to date (configurable-http-proxy $(node -p "require('$NODE_DIR/node_modules/configurable-http-proxy/package.json').version"), mathjax $(node -p "require('$NODE_DIR/node_modules/mathjax/package.json').version"))"
    exit 0
fi
echo "install_node_packages: npm ci in node/ (configurable-http-proxy, mathjax; about 30 MB) ..."
# npm ci installs exactly package-lock.json; --ignore-scripts: none of these packages needs an install script.
(cd "$NODE_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
cp "$NODE_DIR/package-lock.json" "$STAMP"
echo "install_node_packages: ready in node/node_modules"
