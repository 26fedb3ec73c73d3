"""Shared by the `volinit check` tests: run check as a user would, build the test projects'
images once, and leave nothing behind (every name starts with vcheck-)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECTS = REPO / "tests" / "projects" / "check"
TAG = f"t{uuid.uuid4().hex[:8]}"
BUILT = ("seed000", "seed002", "seed003", "seed004", "shellless")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def doc(self) -> dict:
        return json.loads(self.out)

    def found(self, source: str | None = None) -> set[tuple[str, str, str]]:
        return {(f["id"], f["service"], f["path"]) for f in self.doc["findings"]
                if source is None or f["source"] == source}


def check(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    """`python -m volinit check ARGS`; a traceback is a bug whatever the exit code."""
    proc = subprocess.run([sys.executable, "-m", "volinit", "check", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), proc.stderr
    return Run(proc.returncode, proc.stdout, proc.stderr)


def project_env(base_image: str, volinit_image: str, name: str) -> dict[str, str]:
    return {"BASE_IMAGE": base_image, "VOLINIT_IMAGE": volinit_image, "VCHECK_TAG": TAG,
            "COMPOSE_PROJECT_NAME": f"vcheck-{name}-{uuid.uuid4().hex[:6]}"}


def docker(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
           input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout, input=input_text)


def remove_volumes(project: str) -> None:
    out = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    if out:
        docker("volume", "rm", "-f", *out)


def make_volume(project: str, key: str, base_image: str, script: str = "mkdir -p /v/old && echo x > /v/old/f") -> str:
    """A volume as an older root container left it (0:0, data inside), labelled as compose's own."""
    name = f"{project}_{key}"
    docker("volume", "create", "--label", f"com.docker.compose.project={project}",
           "--label", f"com.docker.compose.volume={key}", name).check_returncode()
    docker("run", "--rm", "--network", "none", "-v", f"{name}:/v", "--entrypoint", "sh", base_image, "-c",
           script).check_returncode()
    return name


@pytest.fixture(scope="session")
def check_images(base_image: str, volinit_image: str) -> Iterator[str]:
    """The seed and shell-less projects' images, built once, removed at the end."""
    tags = []
    try:
        for name in BUILT:
            tag = f"vcheck-{name}:{TAG}"
            build = docker("build", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag, str(PROJECTS / name))
            if build.returncode != 0:
                pytest.fail(f"building {name} failed:\n{build.stderr}", pytrace=False)
            tags.append(tag)
        yield TAG
    finally:
        if tags:
            docker("rmi", "-f", *tags)


def labelled() -> set[str]:
    return set(docker("ps", "-a", "-q", "--filter", "label=io.volinit.check").stdout.split())


@pytest.fixture
def leftovers_checked() -> Iterator[None]:
    """No probe or image-reading container may outlive a check (others' checks may run on the
    same engine at once, so only containers that appeared during the test count)."""
    import time

    before = labelled()
    yield
    for _ in range(20):
        left = labelled() - before
        if not left:
            return
        time.sleep(0.5)
    names = docker("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Status}}", "--filter", "label=io.volinit.check")
    raise AssertionError(f"check left containers behind: {names.stdout}")
