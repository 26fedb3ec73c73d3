"""The project's own scripts, run against a fake `docker` and `dockerd` (no engine needed).

scripts/test reads docker-up's last line through `$(scripts/docker-up | sed ...)`. When
docker-up has to start the engine, nothing it leaves running may hold that pipe open, or
the command substitution waits for the engine to exit: on a fresh CI machine, forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FAKE_DOCKER = """#!/bin/sh
# `docker info` answers once the fake dockerd has started; compose and the base image exist.
case "$1" in
info) [ -e "$FAKE_STATE/up" ] ;;
compose) echo 2.99.0 ;;
image) [ -z "${FAKE_NO_IMAGES:-}" ] ;;
pull) exit 1 ;;
import) mkdir -p "$FAKE_STATE/imported" && tar -x -C "$FAKE_STATE/imported" ;;
version) echo 99.0-fake ;;
*) echo "fake docker: unexpected: $*" >&2; exit 1 ;;
esac
"""

FAKE_DOCKERD = """#!/bin/sh
# An engine that starts at once and runs until killed, like the real one (or fails to start).
if [ -n "${FAKE_DOCKERD_FAIL:-}" ]; then echo "failed to start daemon: $FAKE_DOCKERD_FAIL" >&2; exit 1; fi
echo $$ >"$FAKE_STATE/pid"
touch "$FAKE_STATE/up"
exec sleep 300
"""

# debootstrap's result as it lists its sources: the release alone
FAKE_DEBOOTSTRAP = """#!/bin/sh
root=$4
mkdir -p "$root/etc/apt" "$root/etc/ssl/certs" "$root/usr/lib/python3.11" "$root/var/lib/apt/lists"
echo "deb http://deb.debian.org/debian bookworm main" >"$root/etc/apt/sources.list"
touch "$root/usr/lib/python3.11/EXTERNALLY-MANAGED"
echo "$*" >"$FAKE_STATE/debootstrap.args"
"""

# records what ran in the new root, and the sources it would have read at that moment
FAKE_CHROOT = """#!/bin/sh
root=$1; shift
echo "$*" >>"$FAKE_STATE/chroot.log"
cp "$root/etc/apt/sources.list" "$FAKE_STATE/sources-at-upgrade"
"""

FAKE_SUDO = """#!/bin/sh
exec "$@"
"""


@pytest.fixture
def fake_docker(tmp_path: Path) -> Iterator[dict[str, str]]:
    bin_dir = tmp_path / "bin"
    state = tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("dockerd", FAKE_DOCKERD), ("sudo", FAKE_SUDO),
                       ("debootstrap", FAKE_DEBOOTSTRAP), ("chroot", FAKE_CHROOT)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "DOCKERD_LOG": str(tmp_path / "dockerd.log"),
        "BASE_IMAGE": "fake-base:1",
    }
    yield env
    pid_file = state / "pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_docker_up_returns_while_the_engine_it_started_runs(fake_docker: dict[str, str]) -> None:
    # exactly how scripts/test calls it
    proc = subprocess.run(
        ["sh", "-c", 'base=$(scripts/docker-up | sed -n "s/^BASE_IMAGE=//p"); echo "got=$base"'],
        cwd=REPO, env=fake_docker, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "got=fake-base:1"
    assert "starting dockerd" in proc.stderr
    # the engine is still up after docker-up returned: it was started, not waited for
    pid = int((Path(fake_docker["FAKE_STATE"]) / "pid").read_text())
    os.kill(pid, 0)


def test_docker_up_with_an_engine_already_up_starts_none(fake_docker: dict[str, str]) -> None:
    (Path(fake_docker["FAKE_STATE"]) / "up").touch()
    proc = subprocess.run(["scripts/docker-up"], cwd=REPO, env=fake_docker, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "BASE_IMAGE=fake-base:1"
    assert "starting dockerd" not in proc.stderr
    assert not (Path(fake_docker["FAKE_STATE"]) / "pid").exists()


def test_docker_up_says_at_once_when_the_engine_dies_at_start(fake_docker: dict[str, str]) -> None:
    env = {**fake_docker, "FAKE_DOCKERD_FAIL": "no iptables here"}
    proc = subprocess.run(["scripts/docker-up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("docker-up: error: dockerd exited as it started"), proc.stderr
    assert "failed to start daemon: no iptables here" in last


def test_the_local_base_gets_the_security_and_point_release_updates(fake_docker: dict[str, str]) -> None:
    # no base image and no registry: docker-up builds one with debootstrap, whose sources
    # list only `bookworm main`; the image copies its libraries from that base
    state = Path(fake_docker["FAKE_STATE"])
    (state / "up").touch()
    env = {**fake_docker, "FAKE_NO_IMAGES": "1", "VOLINIT_LOCAL_BASE": "volinit-base:fake"}
    proc = subprocess.run(["scripts/docker-up"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "BASE_IMAGE=volinit-base:fake"
    # the updates were listed before the upgrade ran in the new root, and stay listed
    sources = (state / "sources-at-upgrade").read_text().splitlines()
    assert sources == ["deb http://deb.debian.org/debian bookworm main",
                       "deb http://deb.debian.org/debian bookworm-updates main",
                       "deb http://deb.debian.org/debian-security bookworm-security main"]
    assert "apt-get upgrade" in (state / "chroot.log").read_text()
    imported = state / "imported"
    assert (imported / "etc/apt/sources.list").read_text().splitlines() == sources
    assert not (imported / "usr/lib/python3.11/EXTERNALLY-MANAGED").exists()
