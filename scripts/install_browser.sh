#!/usr/bin/env bash
# Install the browser that tests/test_browser.py drives: Debian's Chromium at /usr/bin/chromium
# (plus an emoji font, so the ✅/❌ feedback is legible in the test's screenshots).
# Idempotent: installs only what is missing and does nothing when all is there. Playwright never
# downloads a browser of its own: the tests launch /usr/bin/chromium through `executable_path`.
set -euo pipefail

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
EMOJI_FONT=fonts-noto-color-emoji

have_package() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

packages=()
[ -x "$CHROMIUM" ] || packages+=(chromium)
if command -v dpkg-query >/dev/null 2>&1 && ! have_package "$EMOJI_FONT"; then
    packages+=("$EMOJI_FONT")
fi

if [ ${#packages[@]} -eq 0 ]; then
    echo "install_browser: $CHROMIUM is present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    if [ -x "$CHROMIUM" ]; then
        # Only the emoji font is missing: the tests pass without it (screenshots show boxes for emoji).
        echo "install_browser: $CHROMIUM is present; optional package(s) not installed: ${packages[*]}"
        exit 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "install_browser: $CHROMIUM is missing and this script is not running as root." >&2
        echo "install_browser: install Debian's Chromium first:  sudo apt-get install -y chromium $EMOJI_FONT" >&2
    else
        echo "install_browser: $CHROMIUM is missing and apt-get is not available; install Chromium by hand." >&2
    fi
    echo "install_browser: (or point CHROMIUM=/path/to/chromium at an existing Chromium)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_browser: apt-get install ${packages[*]} ..."
if [ -x "$CHROMIUM" ]; then
    # Only the optional font is missing: don't fail the test run over it (e.g. when offline).
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}"; }; then
        echo "install_browser: could not install ${packages[*]} (optional); $CHROMIUM is present." >&2
    fi
    exit 0
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"

if [ ! -x "$CHROMIUM" ]; then
    echo "install_browser: apt-get finished but $CHROMIUM is still missing." >&2
    exit 1
fi
echo "install_browser: ready: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
