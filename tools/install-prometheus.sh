#!/usr/bin/env bash
# Prometheus server, promtool and the Pushgateway (Debian `prometheus`,
# `prometheus-pushgateway`) for the alert-rule tests (`promtool check/test rules`), the local
# Prometheus the serving tests scrape, and the monitoring job's pushed gauges.
# Idempotent: does nothing when the binaries are already on PATH. Needs root (apt-get).
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
   && command -v prometheus-pushgateway >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: skip the node exporter and web assets the tests do not need.
apt-get install -y -qq --no-install-recommends prometheus prometheus-pushgateway >/dev/null
# The Debian packages start their services where an init system runs; tests start their own.
command -v promtool
command -v prometheus
command -v prometheus-pushgateway
