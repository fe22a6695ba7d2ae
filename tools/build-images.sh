#!/usr/bin/env bash
# Build the component and serving images from images/*.Dockerfile with podman.
#
#   tools/build-images.sh [components|serving ...]
#
# Env: REGISTRY, TAG (defaults match components/images.py and the chart), PUSH=1 pushes,
# NO_CACHE=1 builds every layer again, PYTHON_IMAGE (default: the local bookworm base made by
# tools/install-podman.sh, since Docker Hub's python image is not reachable here; a cluster build
# elsewhere passes nothing and gets the Dockerfiles' public default), TIMINGS (a JSON file that
# gets each image's build seconds and size).
#
# The package registries are reached through the host's CA bundle ($SSL_CERT_FILE): it is
# mounted read-only into the build's RUN steps, never copied into a layer.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-ghcr.io/flight-delay-mlops}
TAG=${TAG:-0.1.0}
PUSH=${PUSH:-0}
NO_CACHE=${NO_CACHE:-0}
TIMINGS=${TIMINGS:-}
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(components serving)

base=$(bash tools/install-podman.sh | tail -n 1)
PYTHON_IMAGE=${PYTHON_IMAGE:-$base}
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}

args=(--network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE"
      --volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
[ "$NO_CACHE" = "1" ] && args+=(--no-cache)

results=()
for img in "${images[@]}"; do
  ref="$REGISTRY/$img:$TAG"
  started=$(date +%s%N)
  podman build "${args[@]}" -f "images/$img.Dockerfile" \
    --ignorefile "images/$img.Dockerfile.dockerignore" -t "$ref" .
  ms=$((($(date +%s%N) - started) / 1000000))
  seconds="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  bytes=$(podman image inspect --format '{{.Size}}' "$ref")
  echo "built $ref in ${seconds}s ($((bytes / 1000000)) MB)"
  results+=("\"$img\": {\"image\": \"$ref\", \"build_seconds\": $seconds, \"size_bytes\": $bytes, \"no_cache\": $([ "$NO_CACHE" = 1 ] && echo true || echo false)}")
  if [ "$PUSH" = "1" ]; then podman push "$ref"; fi
done
# Each rebuild leaves the previous image untagged (3.4 and 2.5 GB): drop those of this project,
# or a few rebuilds fill the disk. Build-stage layers carry no label and stay as cache.
podman image prune -f \
  --filter "label=org.opencontainers.image.source=https://github.com/flight-delay-mlops/flight-delay-mlops" \
  >/dev/null
if [ -n "$TIMINGS" ]; then
  (IFS=,; echo "{${results[*]}}") >"$TIMINGS"
fi
