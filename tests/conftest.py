"""Shared fixtures: root-only tests, and the Docker engine plus the volinit image.

Docker tests are marked `docker`. On a laptop without an engine they skip; in CI
(CI=true) a missing engine or image is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from check_support import check_images, leftovers_checked  # noqa: F401 - fixtures for tests/test_check_*.py

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(why: str) -> None:
    """Skip on a developer's machine; fail in CI, where everything must run."""
    if IN_CI:
        pytest.fail(f"{why} (CI must run this test; scripts/docker-up sets Docker up)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def as_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root (chown to other uids)")


@pytest.fixture(scope="session")
def docker_ok() -> None:
    if shutil.which("docker") is None:
        unavailable("no docker client")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable("no Docker engine answers `docker info`; run scripts/docker-up")


@pytest.fixture(scope="session")
def base_image(docker_ok: None) -> str:
    """The base image the volinit image builds FROM (scripts/docker-up makes sure it exists)."""
    image = os.environ.get("BASE_IMAGE", "python:3.12-slim")
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        unavailable(f"base image {image} is missing; run scripts/docker-up and export the BASE_IMAGE it prints")
    return image


@pytest.fixture(scope="session")
def volinit_image(base_image: str) -> str:
    """Build the project's image once per test session; its tag is $VOLINIT_IMAGE or volinit:test."""
    tag = os.environ.get("VOLINIT_IMAGE", "volinit:test")
    build = subprocess.run(
        ["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag, str(REPO)],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"docker build failed:\n{build.stdout}\n{build.stderr}", pytrace=False)
    return tag


@pytest.fixture(scope="session")
def public_dir() -> Iterator[Path]:
    """A dir under /tmp that any uid can traverse (pytest's own tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="volinit-test-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def work(public_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh dir per test, traversable by uid 1000."""
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=public_dir))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def namespaces(public_dir: Path) -> None:
    """Mount and PID namespaces (unshare), for read-only, tmpfs and cross-filesystem cases."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("needs root and unshare(1) to make mount namespaces")
    target = public_dir / "mount-probe"
    target.mkdir(exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-m", "-p", "-f", "sh", "-c", 'mount -t tmpfs tmpfs "$1"', "sh", str(target)],
        capture_output=True, text=True,
    )
    if probe.returncode != 0:
        unavailable(f"cannot mount in a new namespace here: {probe.stderr.strip()}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # every docker-marked test needs the engine; the fixture decides skip (laptop) or fail (CI)
    for item in items:
        if item.get_closest_marker("docker") and "docker_ok" not in getattr(item, "fixturenames", ()):
            item.fixturenames.insert(0, "docker_ok")  # type: ignore[attr-defined]
