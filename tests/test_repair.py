"""`volinit repair`: the host-side fix for old volumes, run as users run it.

The first half needs no Docker: bad flags exit 2 before any daemon is asked, a missing SDK
and an unreachable daemon are one line each. The `docker` half makes real named volumes
full of root-owned files, runs `volinit repair` in a subprocess, and looks at the owners on
disk through a container, the exit code and stderr.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from volinit import repair
from volinit.errors import UsageError

VOLINIT = Path(sys.executable).with_name("volinit")
NO_DAEMON = "unix:///nonexistent/docker.sock"
OLD_TREE = """
set -e
mkdir -p /v/models/en /v/.cache
echo weights > /v/models/en/model.bin
echo x > /v/.cache/entry
ln -s /etc/passwd /v/passwd-link
chown -R 0:0 /v
"""


class Result(NamedTuple):
    code: int
    err: str


def volinit(*args: str, env: dict[str, str] | None = None) -> Result:
    """The installed console script, as a user types it."""
    if not VOLINIT.exists():
        pytest.fail(f"{VOLINIT} is missing; install the project with pip install -e '.[dev]'", pytrace=False)
    proc = subprocess.run([str(VOLINIT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)
    return Result(proc.returncode, proc.stderr)


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volinit: error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- no Docker needed -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "word"), [
    (["cache_vol", "--owner", "app"], "--owner"),
    (["cache_vol", "--owner", "1000:-1"], "--owner"),
    (["cache_vol", "--owner", "1000", "--dir", "../escape"], "--dir ../escape"),
    (["cache_vol", "--owner", "1000", "--dir", ".tmp", "--prune", "soon"], "--prune"),
    (["cache_vol", "--owner", "1000", "--prune", "24h"], "--prune"),
    (["/etc", "--owner", "1000"], "'/etc'"),  # a host path would become a bind mount
    (["../cache_vol", "--owner", "1000"], "'../cache_vol'"),
    (["cache_vol", "--owner", "1000", "--image", ""], "--image"),
])
def test_bad_flags_exit_2_before_docker_is_asked(args: list[str], word: str) -> None:
    # with no daemon at all, exit 2 (not 1) proves validation came first
    res = volinit("repair", *args, env={"DOCKER_HOST": NO_DAEMON})
    assert res.code == 2, res.err
    line = one_error_line(res.err)
    assert word in line and "Docker daemon" not in line
    assert not line.startswith("volinit: error: spec"), line  # a flag is named as the flag


def test_missing_owner_is_a_usage_error() -> None:
    res = volinit("repair", "cache_vol", env={"DOCKER_HOST": NO_DAEMON})
    assert res.code == 2 and "--owner" in res.err


def test_without_the_docker_sdk_it_says_which_extra_to_install() -> None:
    # an interpreter on which `import docker` fails, as in a core-only install
    code = ("import sys; sys.modules['docker'] = None\n"
            "from volinit.cli import main\n"
            "raise SystemExit(main(['repair', 'cache_vol', '--owner', '1000']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "pip install 'volinit[docker]'" in one_error_line(proc.stderr)


@pytest.mark.parametrize(("host", "why"), [
    (NO_DAEMON, "No such file or directory"),
    ("tcp://127.0.0.1:1", "Connection refused"),
])
def test_unreachable_daemon_is_one_line_naming_it(host: str, why: str) -> None:
    res = volinit("repair", "cache_vol", "--owner", "1000", env={"DOCKER_HOST": host})
    assert res.code == 1
    line = one_error_line(res.err)
    assert f"cannot reach the Docker daemon at {host}: {why}" in line
    assert "DOCKER_HOST" in line  # the fix names the variable to set


def test_plan_runs_apply_with_chown_always_once_per_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(repair.IMAGE_ENV, raising=False)
    plan = repair.plan(["app_cache", "app_models", "app_cache"], "1000", ["./.tmp/", ".tmp", "hf"], " 24h", None, False)
    assert plan.image == "volinit:latest"
    assert [j.volume for j in plan.jobs] == ["app_cache", "app_models"]
    assert plan.jobs[0].command == ("apply", "/repair/app_cache", "--owner", "1000:1000", "--chown", "always",
                                    "--dir", ".tmp", "--dir", "hf", "--prune", "24h")
    monkeypatch.setenv(repair.IMAGE_ENV, "registry.example/volinit:1")
    assert repair.plan(["app_cache"], "1", [], None, None, False).image == "registry.example/volinit:1"
    assert repair.plan(["app_cache"], "1", [], None, "mine:2", False).image == "mine:2"


@pytest.mark.parametrize("image", ["volinit:latest", "ghcr.io/volinit/volinit:0.1", "localhost:5000/team/volinit:1",
                                   "volinit@sha256:" + "a" * 64, "sha256:" + "b" * 64, "0123456789ab"])
def test_image_references_docker_takes_are_taken(image: str) -> None:
    assert repair.plan(["app_cache"], "1", [], None, image, False).image == image


@pytest.mark.parametrize("image", ["BAD IMAGE!!", "UPPER:case", "http://x/y", "volinit:", "a//b"])
def test_a_malformed_image_is_a_usage_error_before_docker_is_asked(image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError) as caught:
        repair.plan(["app_cache"], "1", [], None, image, False)
    assert caught.value.line().startswith(f"--image {image!r}: not an image reference (e.g. volinit:latest")
    monkeypatch.setenv(repair.IMAGE_ENV, image)
    with pytest.raises(UsageError) as caught:
        repair.plan(["app_cache"], "1", [], None, None, False)
    assert caught.value.line().startswith(f"VOLINIT_IMAGE {image!r}: not an image reference")


def test_container_is_hardened_and_mounts_a_volume_not_a_host_path() -> None:
    job = repair.plan(["app_cache"], "1000", [], None, "volinit:x", False).jobs[0]
    kw = repair.container_kwargs(job, "volinit:x", "volinit-repair-app_cache-1")
    assert (kw["read_only"], kw["network_mode"], kw["cap_drop"]) == (True, "none", ["ALL"])
    assert sorted(kw["cap_add"]) == ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
    (mount,) = kw["mounts"]
    assert (mount["Type"], mount["Source"], mount["Target"]) == ("volume", "app_cache", "/repair/app_cache")


@pytest.mark.parametrize(("attrs", "host_dir"), [
    ({"Driver": "local", "Options": {"type": "none", "o": "bind", "device": "/srv/app"}}, "/srv/app"),
    ({"Driver": "local", "Options": {"type": "none", "o": "rbind,ro", "device": "/srv/app"}}, "/srv/app"),
    ({"Driver": "local", "Options": None}, None),  # an ordinary named volume
    ({"Driver": "local", "Options": {"type": "tmpfs", "device": "tmpfs", "o": "size=100m"}}, None),
    ({"Driver": "local", "Options": {"type": "nfs", "o": "addr=10.0.0.1,rw", "device": ":/export"}}, None),
    ({"Driver": "rexray/ebs", "Options": {"o": "bind", "device": "/srv/app"}}, None),  # not the local driver's
])
def test_a_volume_that_binds_a_host_directory_is_recognised(attrs: dict[str, object], host_dir: str | None) -> None:
    found = repair.bound_host_dirs({"app_cache": attrs})
    assert found == ({"app_cache": host_dir} if host_dir else {})


def test_output_is_relayed_in_whole_lines_as_it_arrives() -> None:
    out = io.StringIO()
    repair.relay([b"volinit: /repair/a: ow", b"ner 1000:1000\nvolinit: err", b"or: x\n", b"tail"], out)
    assert out.getvalue().splitlines() == ["volinit: /repair/a: owner 1000:1000", "volinit: error: x", "tail"]


# --- real containers --------------------------------------------------------------------


class Volumes:
    """Named volumes (and containers using them) that the test made; removed afterwards."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.made: list[str] = []
        self.containers: list[str] = []

    def new(self, script: str = OLD_TREE) -> str:
        name = f"volinit-test-{uuid.uuid4().hex[:10]}"
        docker("volume", "create", name)
        self.made.append(name)
        self.sh(name, script)
        return name

    def sh(self, name: str, script: str, user: str = "0:0") -> subprocess.CompletedProcess[str]:
        """Run a shell script with the volume at /v (as root unless told)."""
        return subprocess.run(["docker", "run", "--rm", "--user", user, "-v", f"{name}:/v", "--entrypoint", "sh",
                               self.image, "-c", script], capture_output=True, text=True, timeout=120)

    def start(self, name: str, *argv: str) -> str:
        """A long-running container that mounts the volume, as a service would."""
        cname = f"volinit-test-user-{uuid.uuid4().hex[:8]}"
        self.containers.append(cname)
        docker("run", "-d", "--name", cname, "-v", f"{name}:/data", "--entrypoint", argv[0], self.image, *argv[1:])
        return cname

    def owners(self, name: str) -> dict[str, str]:
        """uid:gid of every entry in the volume ("." is its root), links not followed."""
        proc = self.sh(name, "cd /v && find . -exec stat -c '%u:%g %n' {} +")
        assert proc.returncode == 0, proc.stderr
        found = {}
        for line in proc.stdout.splitlines():
            owner, path = line.split(" ", 1)
            found[path.removeprefix("./")] = owner
        return found

    def cleanup(self) -> None:
        for cname in self.containers:
            subprocess.run(["docker", "rm", "-f", cname], capture_output=True)
        for name in self.made:
            for cid in leftovers(name):
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
            subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def leftovers(volume: str) -> list[str]:
    """Repair containers for this volume that still exist, running or not."""
    return docker("ps", "-aq", "--filter", f"label={repair.LABEL}={volume}").split()


@pytest.fixture
def vols(base_image: str) -> Iterator[Volumes]:
    # the volumes' other users (old root containers, services, `stat` to read owners back)
    # run the base image: the volinit image has no shell, sleep or find
    made = Volumes(base_image)
    yield made
    made.cleanup()


@pytest.fixture
def run_repair(volinit_image: str) -> Callable[..., Result]:
    def go(*args: str) -> Result:
        return volinit("repair", *args, env={repair.IMAGE_ENV: volinit_image})
    return go


@pytest.mark.docker
def test_old_root_owned_volume_becomes_the_services(vols: Volumes, run_repair: Callable[..., Result]) -> None:
    # the case the init service cannot see: someone chowned the root by hand, the rest is root's
    vol = vols.new(OLD_TREE + "chown 1000:1000 /v\n")
    res = run_repair(vol, "--owner", "1000:1000", "--dir", ".tmp")
    assert res.code == 0, res.err
    assert f"/repair/{vol}: owner 1000:1000; chown always: walked" in res.err  # the container's own summary
    owners = vols.owners(vol)
    assert set(owners) == {".", "models", "models/en", "models/en/model.bin", ".cache", ".cache/entry",
                           "passwd-link", ".tmp"}
    assert set(owners.values()) == {"1000:1000"}
    # what the service notices: as uid 1000 it can write where root's files were
    proc = vols.sh(vol, "echo y > /v/.cache/entry && echo z > /v/.tmp/job && echo w > /v/models/en/new",
                   user="1000:1000")
    assert proc.returncode == 0, proc.stderr
    assert leftovers(vol) == []


@pytest.mark.docker
def test_prune_removes_old_orphans_of_each_dir(vols: Volumes, run_repair: Callable[..., Result]) -> None:
    vol = vols.new("mkdir /v/.tmp && touch -d @0 /v/.tmp/orphan && touch /v/.tmp/fresh")
    res = run_repair(vol, "--owner", "1000", "--dir", ".tmp", "--prune", "24h")
    assert res.code == 0, res.err
    assert vols.owners(vol) == {".": "1000:1000", ".tmp": "1000:1000", ".tmp/fresh": "1000:1000"}


@pytest.mark.docker
def test_missing_volume_stops_everything(vols: Volumes, run_repair: Callable[..., Result]) -> None:
    there = vols.new()
    absent = f"volinit-test-absent-{uuid.uuid4().hex[:8]}"
    before = vols.owners(there)
    res = run_repair(there, absent, "--owner", "1000")
    assert res.code == 1
    line = one_error_line(res.err)
    assert f"volume {absent}: not found" in line and there not in line and "docker volume ls" in line
    assert vols.owners(there) == before  # the existing volume was not touched either
    assert set(before.values()) == {"0:0"}
    assert subprocess.run(["docker", "volume", "inspect", absent], capture_output=True).returncode != 0


@pytest.mark.docker
def test_volume_in_use_is_refused_unless_forced(vols: Volumes, run_repair: Callable[..., Result]) -> None:
    vol = vols.new()
    other = vols.new()
    service = vols.start(vol, "sleep", "300")
    res = run_repair(other, vol, "--owner", "1000")
    assert res.code == 1
    line = one_error_line(res.err)
    assert f"volume {vol} is in use by running container {service}" in line and "--force" in line
    assert set(vols.owners(vol).values()) == {"0:0"}
    assert set(vols.owners(other).values()) == {"0:0"}  # refused before the first change

    res = run_repair(other, vol, "--owner", "1000", "--force")
    assert res.code == 0, res.err
    assert f"volume {vol} is in use by {service}; repairing anyway" in res.err
    assert set(vols.owners(vol).values()) == {"1000:1000"}
    assert set(vols.owners(other).values()) == {"1000:1000"}


@pytest.mark.docker
def test_a_volume_bound_to_a_host_directory_is_refused_unless_forced(
        vols: Volumes, run_repair: Callable[..., Result], tmp_path: Path) -> None:
    # `docker volume create -o type=none -o o=bind -o device=DIR`: the volume is DIR itself,
    # and a repair chowned the host's files
    host = tmp_path / "srv-app"
    (host / "conf").mkdir(parents=True)
    (host / "conf/app.ini").write_text("[app]\n")
    (host / "secret.key").write_text("key\n")
    os.chmod(host / "secret.key", 0o600)
    os.chown(host / "conf", 2000, 2000)
    os.chown(host / "conf/app.ini", 2000, 2000)
    before = host_owners(host)
    vol = f"volinit-test-{uuid.uuid4().hex[:10]}"
    docker("volume", "create", "--driver", "local", "-o", "type=none", "-o", "o=bind", "-o", f"device={host}", vol)
    vols.made.append(vol)
    other = vols.new()

    res = run_repair(other, vol, "--owner", "1000:1000")
    assert res.code == 1
    assert one_error_line(res.err) == (
        f"volinit: error: volume {vol} is a bind mount of the host directory {host}, whose owners repair would "
        f"change: nothing was changed (check that {host} holds only this service's data, or pass --force to "
        "repair anyway)")
    assert host_owners(host) == before
    assert set(vols.owners(other).values()) == {"0:0"}  # refused before the first change
    assert leftovers(vol) == [] and leftovers(other) == []

    res = run_repair(vol, "--owner", "1000:1000", "--force")
    assert res.code == 0, res.err
    assert f"warning: volume {vol} is the host directory {host}; changing owners there anyway (--force)" in res.err
    assert set(host_owners(host).values()) == {(1000, 1000)}


def host_owners(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_uid, p.lstat().st_gid) for p in [root, *root.rglob("*")]}


@pytest.mark.docker
def test_stopped_containers_do_not_block(vols: Volumes, run_repair: Callable[..., Result]) -> None:
    vol = vols.new()
    cname = vols.start(vol, "true")
    docker("wait", cname)
    res = run_repair(vol, "--owner", "1000")
    assert res.code == 0, res.err
    assert set(vols.owners(vol).values()) == {"1000:1000"}


@pytest.mark.docker
def test_missing_image_is_named(vols: Volumes, run_repair: Callable[..., Result]) -> None:
    vol = vols.new()
    image = f"volinit-test-absent:{uuid.uuid4().hex[:8]}"
    res = run_repair(vol, "--owner", "1000", "--image", image)
    assert res.code == 1
    line = one_error_line(res.err)
    assert f"image {image}: not found" in line and f"docker build -t {image} ." in line
    assert set(vols.owners(vol).values()) == {"0:0"}


@pytest.mark.docker
def test_exit_code_follows_the_container_and_other_volumes_still_run(
        vols: Volumes, run_repair: Callable[..., Result]) -> None:
    broken = vols.new(OLD_TREE + "touch /v/.tmp\n")  # --dir .tmp cannot be made: a file is there
    fine = vols.new()
    res = run_repair(broken, fine, "--owner", "1000", "--dir", ".tmp")
    assert res.code == 1
    assert "exists and is not a directory" in res.err  # the container's own error, relayed
    assert f"repair of volume {broken}: the volinit container exited with 1" in res.err
    assert "Traceback" not in res.err
    fixed = vols.owners(fine)
    assert ".tmp" in fixed and set(fixed.values()) == {"1000:1000"}
    assert leftovers(broken) == [] and leftovers(fine) == []


@pytest.mark.docker
def test_ctrl_c_removes_the_container_and_exits_130(vols: Volumes, volinit_image: str) -> None:
    vol = vols.new()
    # hold volinit's own lock on the volume root, so the repair container waits there
    vols.start(vol, "flock", "/data", "sleep", "300")
    proc = subprocess.Popen([str(VOLINIT), "repair", vol, "--owner", "1000", "--force"], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, repair.IMAGE_ENV: volinit_image})
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr or ()], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        while "waiting for another volinit run" not in (seen[-1] if seen else ""):
            seen.append(lines.get(timeout=60))  # streamed while the container still runs
        (cid,) = leftovers(vol)
        host = docker("inspect", "-f", "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.NetworkMode}} "
                      "{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}}", cid)
        assert host == "true none [ALL] [CHOWN FOWNER DAC_OVERRIDE]"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    rest = "".join(lines.queue)
    assert "volinit: error: interrupted" in rest and "Traceback" not in rest
    assert leftovers(vol) == []
    assert set(vols.owners(vol).values()) == {"0:0"}  # killed while it waited: nothing changed

