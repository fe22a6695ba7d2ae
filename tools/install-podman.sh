#!/usr/bin/env bash
# Podman (Debian 4.3, runc) for building the project's images and running them as containers,
# plus a local Debian bookworm base image that stands in for the Dockerfiles' public
# `python:3.11-slim-bookworm` (Docker Hub is not reachable from these machines).
#
# Measured settings this machine needs (see ../shared/DESIGN.md):
# - `[containers] default_ulimits = []`: the default ulimits fail (setrlimit) here;
# - `runtime = "runc"`: crun fails in this cgroup setup;
# - host networking for builds and runs (the CNI bridge is not needed and not always usable).
# Idempotent: packages, config and base image are made only when missing. Needs root.
#
# Prints the base image name on its last line.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/flight-delay-base:bookworm}

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
   || ! command -v debootstrap >/dev/null 2>&1 || ! command -v catatonit >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # catatonit: the pause image of `podman kube play`; containernetworking-plugins: pod networks.
  apt-get install -y -qq --no-install-recommends podman runc catatonit \
    containernetworking-plugins debootstrap uidmap >/dev/null
fi

conf=/etc/containers/containers.conf
if ! grep -qs '^default_ulimits = \[\]' "$conf"; then
  mkdir -p /etc/containers
  cat >"$conf" <<'EOF'
# Written by tools/install-podman.sh (flight-delay-mlops): the defaults fail on these machines.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
fi

if ! podman image exists "$BASE_IMAGE"; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  # What python:3.11-slim-bookworm gives a Dockerfile: python3.11 with its headers, venv and
  # pip, CA certificates, useradd. Debian's python lives in /usr/bin; the Dockerfiles name
  # /usr/local/bin/python3.11, as in the official image, so the base links it there.
  debootstrap --variant=minbase --include=python3.11,python3.11-dev,python3.11-venv,python3-pip,ca-certificates,passwd \
    bookworm "$root" http://deb.debian.org/debian >/dev/null
  ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3.11"
  ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  # Debian marks its Python externally managed (PEP 668); the official image does not, and the
  # Dockerfiles `pip install` uv into it.
  rm -f "$root"/usr/lib/python3.11/EXTERNALLY-MANAGED
  tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3.11"]' - "$BASE_IMAGE" >/dev/null
fi
echo "$BASE_IMAGE"
