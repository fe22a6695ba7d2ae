# syntax=docker/dockerfile:1.7
# The serving image: the KServe transformer and predictor (serving/). Only what serving imports
# is installed, at the exact versions of requirements.lock (used as constraints), so the served
# TensorFlow is the one the model was trained and exported with. No Beam, TFDV, TFT or Feast SDK:
# the transformer calls the Feast feature server over HTTP and the TFT graph is inside the
# SavedModel.
# Build from the repository root: docker build -f images/serving.Dockerfile -t IMAGE .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ARG SERVING_PACKAGES="tensorflow kserve tensorflow-metadata protobuf numpy prometheus-client pydantic pyyaml httpx orjson"
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# UV_NATIVE_TLS: trust the system CA store, so a build behind a TLS-inspecting proxy works when
# its bundle is mounted at build time (never copied into a layer).
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy VIRTUAL_ENV=/opt/venv UV_NATIVE_TLS=1
RUN uv venv --python /usr/local/bin/python3.11 /opt/venv
COPY requirements.lock /tmp/requirements.lock
# shellcheck disable=SC2086 # word splitting of the package list is intended
RUN uv pip install --no-cache --constraint /tmp/requirements.lock ${SERVING_PACKAGES}
WORKDIR /opt/flight-delay
COPY pyproject.toml README.md ./
# mlops carries the request schema (vocabularies, ranges) as package data, mlops/schema/: the
# transformer loads it by default, and stops if it is missing rather than accept any carrier.
COPY mlops ./mlops
COPY serving ./serving
RUN uv pip install --no-cache --no-deps . && rm -rf build ./*.egg-info

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="flight-delay serving" \
      org.opencontainers.image.source="https://github.com/flight-delay-mlops/flight-delay-mlops" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/flight-delay /opt/flight-delay
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /opt/flight-delay
USER 10001:10001
EXPOSE 8080
# The chart passes `-m serving.predictor ...` or `-m serving.transformer ...` as arguments.
ENTRYPOINT ["python"]
