#!/usr/bin/env bash
# Headless Chromium (Debian) for the run-report tests and `make report`. Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
