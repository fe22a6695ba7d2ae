#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or through passwordless sudo, for the install-*.sh
# scripts: apt-install.sh NAME HOW PACKAGE... (NAME prefixes the messages; HOW says what to do by
# hand where apt-get cannot run). Without apt-get or root it says so and exits 1.
set -euo pipefail
name=$1 how=$2
shift 2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: no apt-get on this machine: $how" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "$name: needs root for apt-get (no passwordless sudo): $how" >&2
    exit 1
  fi
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# --no-install-recommends: only what the named packages need to run.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
