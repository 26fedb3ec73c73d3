"""SECURITY.md's promises in real container runs of the volinit image.

The volume is a host directory bind-mounted into the container, so the test can plant what
a hostile user would (links to the container's own files, a hard link to a root file on the
same filesystem, a device node, a 3000-deep tree) and read every owner back afterwards.
Runs are hardened as the compose examples run them unless a row says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Result, make_chain
from test_security import count, entries, make_files, owners, tmpfs

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("as_root")]

HARDENED = ["--read-only", "--network", "none", "--cap-drop", "ALL", "--cap-add", "CHOWN",
            "--cap-add", "FOWNER", "--cap-add", "DAC_OVERRIDE", "--security-opt", "no-new-privileges"]
SPEC = 'version: 1\nowner: "1000:1000"\nvolumes:\n  /vol: {}\n'
DEEP = 3000
DAY = 86400




def docker_run(image: str, *args: str, flags: tuple[str, ...] = (), timeout: float = 300) -> Result:
    name = f"volinit-sec-{uuid.uuid4().hex[:12]}"
    try:
        proc = subprocess.run(["docker", "run", "--name", name, *flags, image, *args], capture_output=True,
                              text=True, errors="replace", timeout=timeout)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def hostile_volume(box: Path) -> tuple[Path, Path]:
    """A volume its user has filled with traps, and a root-owned dir beside it."""
    vol, outside = box / "vol", box / "outside"
    make_files(outside, 2, 3)
    (outside / "secret").write_text("root's\n")
    os.chmod(outside / "secret", 0o600)
    make_files(vol, 3, 5)
    (vol / "shadow").symlink_to("/etc/shadow")  # the container's own
    (vol / "slash").symlink_to("/")
    (vol / "out").symlink_to("/outside")  # outside, mounted into the container
    (vol / "up").symlink_to("../outside")
    (vol / "loop").symlink_to("loop")
    (vol / "ping").symlink_to("pong")
    (vol / "pong").symlink_to("ping")
    os.link(outside / "secret", vol / "hardlink")  # same filesystem: both under box
    os.mknod(vol / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(vol / "fifo")  # opening it would block the walk forever
    (vol / "inner").mkdir()  # a tmpfs is mounted here in the container
    (vol / "new\nline").write_text("x")
    (vol / "dir\nwith newline").mkdir()
    (vol / "dir\nwith newline" / "f").write_text("x")
    os.close(os.open(bytes(vol) + b"/bad\xff\xfeutf8", os.O_CREAT | os.O_WRONLY, 0o644))
    (vol / ("n" * 255)).write_text("x")
    make_chain(vol, DEEP, file_at_bottom="file")
    return vol, outside


# Runs inside the container: a prior step puts a file on the inner tmpfs, then volinit runs
# as the image runs it, then the owners volinit must not have changed are printed.
HOSTILE_SCRIPT = """
echo made-by-a-prior-step > /vol/inner/f
before=$(stat -c '%n %u:%g %a' /etc/shadow / /vol/inner /vol/inner/f /outside /outside/secret)
volinit apply --json
rc=$?
echo ---
echo "$before"
echo ---
stat -c '%n %u:%g %a' /etc/shadow / /vol/inner /vol/inner/f /outside /outside/secret
exit $rc
"""


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards by rm(1): pytest's own cleanup recurses, and dies
    (RecursionError, failing the session) on a tree 3000 levels deep."""
    yield tmp_path
    subprocess.run(["rm", "-rf", "--one-file-system", str(tmp_path)], check=False)


@pytest.fixture(scope="module")
def volinit_with_shell(volinit_image: str, base_image: str) -> Iterator[str]:
    """The image's volinit (its venv and entry points, as shipped) in its base image, for the
    one test that plants a file in a container's tmpfs and reads owners back with stat(1):
    the image itself has no shell. Same interpreter: the image's venv points at the base's."""
    tag = f"volinit-sec-shell-{uuid.uuid4().hex[:8]}"
    dockerfile = (f"FROM {base_image}\n"
                  f"COPY --from={volinit_image} /opt/volinit /opt/volinit\n"
                  f"COPY --from={volinit_image} /usr/local/bin/ /usr/local/bin/\n")
    build = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    yield tag
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def test_a_hostile_volume_is_fixed_and_nothing_outside_it_changes(volinit_with_shell: str, box: Path) -> None:
    vol, outside = hostile_volume(box)
    spec = box / "volinit.yaml"
    spec.write_text(SPEC)
    before = owners(outside)
    run = docker_run(
        volinit_with_shell, "-c", HOSTILE_SCRIPT,
        flags=(*HARDENED, "--entrypoint", "sh",
               # Docker's usual soft limit: a walk 3000 deep holds ~6000 fds
               "--ulimit", "nofile=1024:20000",
               "-v", f"{vol}:/vol", "-v", f"{outside}:/outside", "--mount", "type=tmpfs,dst=/vol/inner",
               "-v", f"{spec}:/etc/volinit/volinit.yaml:ro"))
    assert run.code == 0, run.err
    report, in_container_before, in_container_after = run.out.split("\n---\n")
    # the container's /etc/shadow, its /, the inner tmpfs and the outside dir: unchanged
    assert in_container_after.strip() == in_container_before.strip()
    assert "/vol/inner/f 0:0" in in_container_after and "/etc/shadow 0:" in in_container_after
    assert owners(outside) == before
    # the skips are reported, in the JSON and in the summary line
    skipped = json.loads(report)["volumes"][0]["skipped"]
    assert skipped["by_reason"] == {"device node": 1, "hard link": 1, "another mount": 1}
    assert "skipped 3 (1 another mount, 1 device node, 1 hard link: " in run.err
    # the device node and the hard link stay root's; every other entry is the user's now
    left = {"null", "hardlink", "inner"}  # inner: the dir under the tmpfs, never seen
    for rel, st in entries(vol):
        want = (0, 0) if rel in left else (1000, 1000)
        assert (st.st_uid, st.st_gid) == want, rel
    assert stat.S_ISCHR(os.lstat(vol / "null").st_mode)
    assert os.stat(vol).st_uid == 1000
    assert count(vol, "-name", "file", "-uid", "1000") == 1  # the bottom of the 3000-deep tree


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param(("--cap-drop", "ALL", "-v", "{vol}:/vol"),
                     "Operation not permitted (volinit needs root with CAP_CHOWN", id="cap-drop-all-alone"),
        pytest.param((*HARDENED, "-v", "{vol}:/vol:ro"),
                     "Read-only file system (the volume is mounted read-only; mount it read-write",
                     id="read-only-mount"),
    ],
)
def test_a_fault_is_one_clear_line_and_the_next_run_finishes(volinit_image: str, tmp_path: Path,
                                                               fault: tuple[str, ...], message: str) -> None:
    vol = tmp_path / "vol"
    total = make_files(vol, 3, 5)
    argv = ("apply", "/vol", "--owner", "1000", "--dir", ".tmp")
    failed = docker_run(volinit_image, *argv, flags=tuple(f.format(vol=vol) for f in fault))
    assert failed.code == 1
    [line] = failed.errors
    assert line.startswith("volinit: error: cannot change owner of /vol/") and message in line
    assert os.stat(vol).st_uid == 0  # the root says the job is not done
    fixed = docker_run(volinit_image, *argv, flags=(*HARDENED, "-v", f"{vol}:/vol"))
    assert fixed.code == 0, fixed.err
    assert count(vol, "-uid", "1000") == total + 1 and os.stat(vol).st_uid == 1000


@contextlib.contextmanager
def detached(image: str, *args: str, flags: tuple[str, ...]) -> Iterator[str]:
    name = f"volinit-sec-{uuid.uuid4().hex[:12]}"
    subprocess.run(["docker", "run", "-d", "--name", name, *flags, image, *args], check=True,
                   capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def inspect(name: str, fmt: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", fmt, name], capture_output=True, text=True,
                          check=True).stdout.strip()


def wait_for_walk(name: str, timeout: float = 30) -> None:
    """Return once the container's volinit (its PID 1) has the volume open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = inspect(name, "{{.State.Pid}}")
        fds = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == "/vol":
                        return
        time.sleep(0.005)
    raise AssertionError(f"volinit in {name} never opened /vol")


@pytest.mark.parametrize(("how", "code", "word"), [(["stop", "-t", "10"], 143, "terminated"),
                                                   (["kill", "-s", "INT"], 130, "interrupted")])
def test_docker_stop_mid_walk_ends_it_promptly_and_a_rerun_finishes(volinit_image: str, tmp_path: Path,
                                                                    how: list[str], code: int, word: str) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        vol = fs / "vol"
        total = make_files(vol, 100, 1000)
        argv = ("apply", "/vol", "--owner", "1000")
        with detached(volinit_image, *argv, flags=(*HARDENED, "-v", f"{vol}:/vol")) as name:
            wait_for_walk(name)
            time.sleep(0.05)
            sent = time.monotonic()
            subprocess.run(["docker", *how, name], check=True, capture_output=True)
            subprocess.run(["docker", "wait", name], check=True, capture_output=True, timeout=10)
            took = time.monotonic() - sent
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
            assert inspect(name, "{{.State.ExitCode}}") == str(code), logs
        assert took < 3  # well inside docker stop's grace period: volinit, not SIGKILL, ended it
        assert f"volinit: error: {word}; rerun to finish" in logs and "Traceback" not in logs
        assert 0 < count(vol, "-uid", "1000") < total and os.stat(vol).st_uid == 0
        rerun = docker_run(volinit_image, *argv, flags=(*HARDENED, "-v", f"{vol}:/vol"))
        assert rerun.code == 0, rerun.err
        assert count(vol, "-uid", "1000") == total and os.stat(vol).st_uid == 1000


# --- issue 9: mounts that share the volume's device number, depth, setgid -----------------

@contextlib.contextmanager
def named_volumes(*names: str) -> Iterator[dict[str, Path]]:
    """Docker named volumes (removed afterwards), by name -> their directory on the host."""
    tag = uuid.uuid4().hex[:8]
    made: dict[str, Path] = {}
    try:
        for name in names:
            full = f"volinit-sec-{name}-{tag}"
            subprocess.run(["docker", "volume", "create", full], check=True, capture_output=True)
            made[full] = Path(subprocess.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", full],
                                             capture_output=True, text=True, check=True).stdout.strip())
        yield made
    finally:
        for full in made:
            subprocess.run(["docker", "volume", "rm", "-f", full], capture_output=True)


def test_nested_volumes_and_host_bind_mounts_inside_a_volume_are_never_touched(volinit_image: str,
                                                                                tmp_path: Path) -> None:
    # The seed-003 layout gone wrong: a second named volume inside the cache volume, a host
    # dir and a host file bind-mounted into it, and a third volume inside its .tmp. All of
    # them live on the host's filesystem: the same st_dev as the volume around them.
    old = time.time() - 3 * DAY
    host_conf, host_file = tmp_path / "etc-myapp", tmp_path / "config.json"
    make_files(host_conf, 2, 2, mtime=old)
    host_file.write_text("{}\n")
    os.chmod(host_file, 0o600)
    spec = tmp_path / "volinit.yaml"
    spec.write_text('version: 1\nowner: "1000:1000"\nvolumes:\n  /app/cache:\n    chown: always\n'
                    '    dirs:\n      .tmp: {prune: 1d}\n')
    with named_volumes("cache", "models", "shared") as vols:
        cache, models, shared = vols
        make_files(vols[models], 2, 3)
        (vols[models] / "secret.key").write_text("root's\n")
        os.chmod(vols[models] / "secret.key", 0o600)
        os.chown(vols[models] / "d0", 2000, 2000)
        make_files(vols[shared], 1, 3, mtime=old)
        inner = {name: owners(vols[name]) for name in (models, shared)}
        before_conf, before_file = owners(host_conf), os.stat(host_file)
        run = docker_run(volinit_image, "apply", "--json", flags=(
            *HARDENED, "-v", f"{cache}:/app/cache", "-v", f"{models}:/app/cache/models",
            "-v", f"{shared}:/app/cache/.tmp/shared", "-v", f"{host_conf}:/app/cache/conf",
            "-v", f"{host_file}:/app/cache/config.json", "-v", f"{spec}:/etc/volinit/volinit.yaml:ro"))
        assert run.code == 0, run.err
        # nothing on the inner mounts changed, nothing there was pruned
        assert {name: owners(vols[name]) for name in (models, shared)} == inner
        assert owners(host_conf) == before_conf
        after = os.stat(host_file)
        assert (after.st_uid, after.st_gid, after.st_mode) == (before_file.st_uid, before_file.st_gid,
                                                             before_file.st_mode)
        skipped = json.loads(run.out)["volumes"][0]["skipped"]
        # models, conf and config.json in the walk; .tmp/shared in the prune and in the walk
        assert skipped["by_reason"] == {"another mount": 5}, run.err
        # the cache volume's own entries are the user's; under the mount points, which the
        # container never sees, are the empty dirs and file Docker made for them
        points = {"models", ".tmp/shared", "conf", "config.json"}
        assert {o[:2] for rel, o in owners(vols[cache]).items() if rel not in points} == {(1000, 1000)}


def chain_volume(box: Path, depth: int, name: str) -> Path:
    """A volume already right, whose user built a chain `depth` deep in its .tmp."""
    vol = box / "vol"
    (vol / ".tmp").mkdir(parents=True)
    make_chain(vol / ".tmp", depth, name=name, file_at_bottom="f")
    subprocess.run(["chown", "-R", "1000:1000", str(vol)], check=True)
    return vol


CHAIN_SPEC = 'version: 1\nowner: "1000:1000"\nvolumes:\n  /vol:\n    dirs:\n      .tmp: {prune: 1d}\n'


def test_a_chain_4000_deep_of_255_byte_names_starts_within_64_mb(volinit_image: str, box: Path) -> None:
    # Each level used to keep its whole path: 4000 x 255 bytes cost about 2 GB, every start
    # (prune runs even when the root is right), so a memory limit OOM-killed the init forever.
    vol = chain_volume(box, 4000, "n" * 255)
    spec = box / "volinit.yaml"
    spec.write_text(CHAIN_SPEC)
    flags = (*HARDENED, "--memory", "64m", "--memory-swap", "64m", "-v", f"{vol}:/vol",
             "-v", f"{spec}:/etc/volinit/volinit.yaml:ro")
    run = docker_run(volinit_image, "apply", flags=flags)
    assert run.code == 0, run.err
    assert "root already right, walk skipped" in run.err
    os.chown(vol, 0, 0)  # and a full walk of it, under the same limit
    run = docker_run(volinit_image, "apply", flags=flags)
    assert run.code == 0, run.err
    assert "root was 0:0 0755: walked; 4002 entries walked" in run.err


def test_a_chain_deeper_than_the_open_file_limit_is_walked_and_pruned(volinit_image: str, box: Path) -> None:
    # Deeper than any fd limit is always possible for the volume's user: the walk and prune
    # must not need an fd per level (they hold a constant number now).
    vol = chain_volume(box, 1500, "d")
    os.chown(vol, 0, 0)
    spec = box / "volinit.yaml"
    spec.write_text(CHAIN_SPEC)
    run = docker_run(volinit_image, "apply", flags=(
        *HARDENED, "--ulimit", "nofile=256:256", "-v", f"{vol}:/vol",
        "-v", f"{spec}:/etc/volinit/volinit.yaml:ro"))
    assert run.code == 0, run.err
    assert "root was 0:0 0755: walked; 1502 entries walked" in run.err
    assert os.stat(vol).st_uid == 1000


def test_a_setgid_mode_needs_fsetid_and_then_reruns_are_quick(volinit_image: str, tmp_path: Path) -> None:
    # Without CAP_FSETID the kernel drops S_ISGID from chmod on a dir of another group: the
    # root never matched its spec and every start walked everything, reporting it fixed.
    vol = tmp_path / "vol"
    make_files(vol, 2, 3)
    spec = tmp_path / "volinit.yaml"
    spec.write_text('version: 1\nowner: "1000:1000"\nvolumes:\n  /vol:\n    mode: "2775"\n')
    mounts = ("-v", f"{vol}:/vol", "-v", f"{spec}:/etc/volinit/volinit.yaml:ro")
    refused = docker_run(volinit_image, "apply", flags=(*HARDENED, *mounts))
    assert refused.code == 1
    assert refused.errors == ["volinit: error: cannot set mode 2775 at volumes./vol.mode: a setgid bit "
                              "on a dir of another group needs CAP_FSETID (add it to the volinit service: "
                              "cap_add: [CHOWN, FOWNER, DAC_OVERRIDE, FSETID])"]
    assert count(vol, "-uid", "1000") == 0 and os.stat(vol).st_uid == 0  # refused before the walk
    with_fsetid = (*HARDENED, "--cap-add", "FSETID", *mounts)
    run = docker_run(volinit_image, "apply", flags=with_fsetid)
    assert run.code == 0, run.err
    assert stat.S_IMODE(os.stat(vol).st_mode) == 0o2775
    again = docker_run(volinit_image, "apply", flags=with_fsetid)
    assert "root already right, walk skipped" in again.err
