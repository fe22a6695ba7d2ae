#!/usr/bin/env bash
# A Java runtime (Debian `default-jre-headless`) for pyspark: Feast's Spark offline store
# (feature_repo/feature_store.spark.yaml) runs its point-in-time joins in a local Spark JVM.
# Idempotent and fast when `java -version` already works. Installs with apt-get as root, or
# through sudo; where neither is possible it says what to install and exits 1.
set -euo pipefail
if java -version >/dev/null 2>&1; then
  exit 0
fi
how="install a Java 17 runtime (Debian/Ubuntu: default-jre-headless), or set JAVA_HOME / put"
how+=" java on PATH, then run: make jre"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-jre.sh: no apt-get on this machine: $how" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "install-jre.sh: needs root for apt-get (no passwordless sudo): $how" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# --no-install-recommends: no fonts, X11 or sound libraries for a headless JVM.
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null
java -version
