#!/usr/bin/env bash
# Prometheus server, promtool and the Pushgateway (Debian `prometheus`,
# `prometheus-pushgateway`): the local loop's shadow analysis (`mlops run` after the first
# model), the alert-rule tests (`promtool check/test rules`), the local Prometheus the serving
# tests scrape, and the monitoring job's pushed gauges.
# Idempotent and fast when the binaries are already on PATH; otherwise tools/apt-install.sh.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
   && command -v prometheus-pushgateway >/dev/null 2>&1; then
  exit 0
fi
how="install the Debian/Ubuntu packages prometheus and prometheus-pushgateway (or put prometheus,"
how+=" promtool and prometheus-pushgateway on PATH), then run: make prometheus"
# Without the node exporter and web assets (--no-install-recommends) the tests do not need.
# The script's own folder, with bash alone (no dirname: a minimal PATH must still get the message).
here=${BASH_SOURCE[0]%/*}
[ "$here" = "${BASH_SOURCE[0]}" ] && here=.
bash "$here/apt-install.sh" install-prometheus.sh "$how" prometheus prometheus-pushgateway
# The Debian packages start their services where an init system runs; tests start their own.
command -v promtool
command -v prometheus
command -v prometheus-pushgateway
