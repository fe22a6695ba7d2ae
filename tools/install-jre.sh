#!/usr/bin/env bash
# A Java runtime (Debian `default-jre-headless`) for pyspark: Feast's Spark offline store
# (feature_repo/feature_store.spark.yaml) runs its point-in-time joins in a local Spark JVM.
# Idempotent and fast when `java -version` already works; otherwise tools/apt-install.sh.
set -euo pipefail
if java -version >/dev/null 2>&1; then
  exit 0
fi
how="install a Java 17 runtime (Debian/Ubuntu: default-jre-headless), or set JAVA_HOME / put"
how+=" java on PATH, then run: make jre"
# The script's own folder, with bash alone (no dirname: a minimal PATH must still get the message).
here=${BASH_SOURCE[0]%/*}
[ "$here" = "${BASH_SOURCE[0]}" ] && here=.
bash "$here/apt-install.sh" install-jre.sh "$how" default-jre-headless
java -version
