#!/usr/bin/env bash
# Checkov (the security scanner of the rendered manifests) into its own venv, .tools/checkov.
# Never into .venv: checkov pins packaging, cachetools and importlib-metadata below what the
# pinned runtime environment needs. Idempotent: does nothing when the pinned version is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS:-$ROOT/.tools}"
VENV="$TOOLS/checkov"
VERSION="3.3.30"
PYTHON="${PYTHON:-python3.11}"

if [[ -x "$VENV/bin/checkov" ]] && [[ "$("$VENV/bin/checkov" --version 2>/dev/null)" == "$VERSION" ]]; then
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$VERSION"
"$VENV/bin/checkov" --version
