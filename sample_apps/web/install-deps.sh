#!/bin/sh
# What the web app's browser test needs on a fresh Debian machine, installed only when missing:
# Debian's Chromium (apt) and the npm packages of sample_apps/web (npm ci, from the lock file).
# Idempotent: a second run does nothing. Run as root (make setup does) from anywhere.
set -eu
web="$(cd "$(dirname "$0")" && pwd)"

if ! command -v chromium >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" != "0" ]; then sudo="sudo"; fi
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install-deps.sh: npm is missing; install Node.js 18 or newer (Debian: apt-get install -y nodejs npm)" >&2
    exit 1
fi

# npm ci when node_modules is missing or older than the lock file (the lock changed since).
if [ ! -d "$web/node_modules" ] || [ "$web/package-lock.json" -nt "$web/node_modules" ]; then
    npm ci --prefix "$web" --no-audit --no-fund
    touch "$web/node_modules"
fi
