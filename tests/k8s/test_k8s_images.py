"""Static checks of the Dockerfiles (no Docker engine runs here to build them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.k8s_validate import ROOT

pytestmark = pytest.mark.unit

DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_both_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["components.Dockerfile", "serving.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_copies_only_files_that_exist_and_are_not_ignored(dockerfile: Path) -> None:
    ignore = (dockerfile.parent / f"{dockerfile.name}.dockerignore").read_text()
    allowed = [line[1:].rstrip("/") for line in ignore.splitlines() if line.startswith("!")]
    copies = [rest for word, rest in _instructions(dockerfile) if word == "COPY"]
    sources = [
        src
        for rest in copies
        if "--from=" not in rest
        for src in rest.split()[:-1]
        if not src.startswith("--")
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert any(src == a or src.startswith(a + "/") for a in allowed), src


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_runs_as_the_charts_non_root_user(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    users = [rest for word, rest in instructions if word == "USER"]
    # The last USER is what the container runs as; the chart's runAsUser is 10001.
    assert users[-1] == "10001:10001"
    helpers = (ROOT / "charts" / "flight-delay" / "templates" / "_helpers.tpl").read_text()
    assert "runAsUser: 10001" in helpers
    # Multi-stage: build tools (uv, pip caches) stay in the first stage.
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build")
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    final_stage = instructions[last_from:]
    assert not any(word == "RUN" and "uv " in rest for word, rest in final_stage)
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final_stage


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_base_image_is_the_projects_python(dockerfile: Path) -> None:
    (arg,) = [
        r for w, r in _instructions(dockerfile) if w == "ARG" and r.startswith("PYTHON_IMAGE")
    ]
    assert arg == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.12"' in pyproject
    makefile = (ROOT / "Makefile").read_text()
    uv = re.search(r"^UV_VERSION := (\S+)", makefile, re.M)
    assert uv and f"ARG UV_VERSION={uv.group(1)}" in dockerfile.read_text()


def test_serving_packages_are_pinned_in_the_lock() -> None:
    text = (ROOT / "images" / "serving.Dockerfile").read_text()
    packages = re.search(r'ARG SERVING_PACKAGES="([^"]+)"', text)
    assert packages
    lock = (ROOT / "requirements.lock").read_text()
    for name in packages.group(1).split():
        assert re.search(rf"^{re.escape(name)}==", lock, re.M), name


def test_images_default_to_the_component_image_names() -> None:
    from components.images import COMPONENT_IMAGE, SERVING_IMAGE

    values = (ROOT / "charts" / "flight-delay" / "values.yaml").read_text()
    chart = (ROOT / "charts" / "flight-delay" / "Chart.yaml").read_text()
    registry = re.search(r"^  registry: (\S+)", values, re.M)
    app_version = re.search(r'^appVersion: "(\S+)"', chart, re.M)
    assert registry and app_version
    assert f"{registry.group(1)}/serving:{app_version.group(1)}" == SERVING_IMAGE
    assert f"{registry.group(1)}/components:{app_version.group(1)}" == COMPONENT_IMAGE
