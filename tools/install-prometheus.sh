#!/usr/bin/env bash
# Prometheus server, promtool and the Pushgateway (Debian `prometheus`,
# `prometheus-pushgateway`): the local loop's shadow analysis (`mlops run` after the first
# model), the alert-rule tests (`promtool check/test rules`), the local Prometheus the serving
# tests scrape, and the monitoring job's pushed gauges.
# Idempotent and fast when the binaries are already on PATH. Installs with apt-get as root, or
# through sudo; where neither is possible it says what to install and exits 1.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
   && command -v prometheus-pushgateway >/dev/null 2>&1; then
  exit 0
fi
how="install the Debian/Ubuntu packages prometheus and prometheus-pushgateway (or put prometheus,"
how+=" promtool and prometheus-pushgateway on PATH), then run: make prometheus"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus.sh: no apt-get on this machine: $how" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install-prometheus.sh: needs root for apt-get (no passwordless sudo): $how" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# --no-install-recommends: skip the node exporter and web assets the tests do not need.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null
# The Debian packages start their services where an init system runs; tests start their own.
command -v promtool
command -v prometheus
command -v prometheus-pushgateway
