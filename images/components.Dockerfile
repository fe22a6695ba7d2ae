# syntax=docker/dockerfile:1.7
# The component image: the one pinned environment (requirements.lock) plus the project, as TFX
# uses one image for all its components. Every KFP component of pipelines/ runs in it.
# Build from the repository root: docker build -f images/components.Dockerfile -t IMAGE .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# pyfarmhash (from tensorflow-transform) ships only an sdist: its C++ extension needs a compiler.
# It stays in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
# uv resolves nothing here: it installs the exact pins of requirements.lock, fast.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# UV_NATIVE_TLS: trust the system CA store, so a build behind a TLS-inspecting proxy works when
# its bundle is mounted at build time (never copied into a layer).
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy VIRTUAL_ENV=/opt/venv UV_NATIVE_TLS=1
RUN uv venv --python /usr/local/bin/python3.11 /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN uv pip install --no-cache -r /tmp/requirements.lock
WORKDIR /opt/flight-delay
COPY pyproject.toml README.md ./
COPY mlops ./mlops
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY feature_repo/definitions.py feature_repo/feature_store.yaml ./feature_repo/
# Not editable: the image holds an installed copy, the sources above are only for the Feast repo.
RUN uv pip install --no-cache --no-deps . && rm -rf build ./*.egg-info

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="flight-delay components" \
      org.opencontainers.image.source="https://github.com/flight-delay-mlops/flight-delay-mlops" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, high UID that matches the charts' runAsUser; no login shell, no home content.
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid 10001 --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin app
# The build stage's uv and compilers stay behind: only the environment and the project move on.
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/flight-delay /opt/flight-delay
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /opt/flight-delay
USER 10001:10001
CMD ["python"]
