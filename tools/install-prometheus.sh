#!/usr/bin/env bash
# Prometheus server and promtool (Debian `prometheus` package) for the alert-rule tests
# (`promtool check/test rules`) and the local Prometheus the serving tests scrape with.
# Idempotent: does nothing when both binaries are already on PATH. Needs root (apt-get).
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: skip the node exporter and web assets the tests do not need.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool
command -v prometheus
