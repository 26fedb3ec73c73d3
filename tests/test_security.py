"""SECURITY.md's promises, proved as root on real files (no Docker).

volinit runs as root over trees that a less-trusted user controls. Each test here builds
such a tree (or a race, a crash, a fault, bad input), runs volinit the way a user would
(the CLI in a subprocess; in-process where thousands of runs are needed) and checks what a
user would notice: owners on disk, what exists afterwards, exit codes, the error line.
The real-container half is tests/test_security_container.py.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import Result, make_chain, volinit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volinit import cli, spec
from volinit.apply import apply_spec
from volinit.errors import SpecError
from volinit.prune import prune_dir
from volinit.walk import SKIP_VANISHED, chown_tree, open_volume

pytestmark = pytest.mark.usefixtures("as_root")

DAY = 86400
# Paths that both apply and prune must refuse before touching anything. Not /tmp: prune
# accepts it on purpose (tmpreaper-style cleaning), so a fuzzer that names it wipes /tmp.
REFUSED = ("/", "/etc", "/usr/lib", "/proc/1", "/var/lib/docker/volumes", "/root", "/tmp/../etc", "/sys/kernel")


def entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below root with its lstat: fd-relative, so a 3000-deep tree is fine."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    top = os.open(root, flags)
    dev = os.fstat(top).st_dev
    stack = [(top, "")]
    while stack:
        fd, base = stack.pop()
        try:
            with os.scandir(fd) as it:
                found = list(it)
            for entry in found:
                st = entry.stat(follow_symlinks=False)
                rel = f"{base}/{entry.name}" if base else entry.name
                yield rel, st
                if stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                    stack.append((os.open(entry.name, flags, dir_fd=fd), rel))
        finally:
            os.close(fd)


def owners(root: Path) -> dict[str, tuple[int, int, int]]:
    """uid, gid and mode of root and of every entry below it."""
    st = os.lstat(root)
    out = {"": (st.st_uid, st.st_gid, st.st_mode)}
    out.update((rel, (s.st_uid, s.st_gid, s.st_mode)) for rel, s in entries(root))
    return out


def count(root: Path, *test: str) -> int:
    """Entries below root passing find(1)'s test (all of them without one); twice as fast as Python."""
    found = subprocess.run(["find", str(root), "-mindepth", "1", "-xdev", *test, "-printf", "."],
                           capture_output=True, text=True, check=True)
    return len(found.stdout)


def make_files(root: Path, dirs: int, per_dir: int, mtime: float | None = None) -> int:
    """dirs directories of per_dir empty files under root; returns the entry count."""
    root.mkdir(parents=True, exist_ok=True)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(dirs):
            os.mkdir(f"d{i}", dir_fd=top)
            fd = os.open(f"d{i}", os.O_RDONLY | os.O_DIRECTORY, dir_fd=top)
            try:
                for j in range(per_dir):
                    os.mknod(f"f{j}", 0o644 | stat.S_IFREG, dir_fd=fd)
                    if mtime is not None:
                        os.utime(f"f{j}", (mtime, mtime), dir_fd=fd)
            finally:
                os.close(fd)
            if mtime is not None:
                os.utime(f"d{i}", (mtime, mtime), dir_fd=top)
    finally:
        os.close(top)
    return dirs * (per_dir + 1)


@contextlib.contextmanager
def tmpfs(where: Path, options: str = "size=512m") -> Iterator[Path]:
    """A fresh tmpfs at where: fast to fill, and its own filesystem to make full or read-only."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "volinit-test", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A dir under /tmp that uid 1000 can traverse (pytest's own tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="volinit-sec-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def wait_until_open(pid: int, path: Path, timeout: float = 20) -> None:
    """Return once process pid holds an fd on path: volinit has opened the volume."""
    deadline = time.monotonic() + timeout
    target = str(path)
    while time.monotonic() < deadline:
        fds = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return
        time.sleep(0.002)
    raise AssertionError(f"volinit (pid {pid}) never opened {path}")


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "volinit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")


def start_together(*argvs: list[str]) -> list[subprocess.Popen[str]]:
    """Start one volinit per argv, all held at a shared pipe and let go at once."""
    r, w = os.pipe()
    try:
        procs = [subprocess.Popen(["sh", "-c", 'read _; exec "$@" </dev/null', "sh", sys.executable, "-m", "volinit",
                                   *argv], stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  errors="replace")
                 for argv in argvs]
    finally:
        os.close(r)
    os.close(w)  # end of file: every child's read returns at the same moment
    return procs


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> Result:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return Result(proc.returncode, out, err)


# --- A swap race ---------------------------------------------------------------------

# Swaps pairs of names atomically (renameat2 RENAME_EXCHANGE) as fast as it can: a user
# turning a directory of the volume into a symlink to somewhere else and back, again and
# again, hoping volinit follows the link in between.
FLIPPER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
pairs = [(a.encode(), b.encode()) for a, b in zip(sys.argv[1::2], sys.argv[2::2])]
print("flipping", flush=True)
while True:
    for a, b in pairs:
        libc.renameat2(-100, a, -100, b, 2)
"""


def swap_race(tmp_path: Path, run: Callable[[Path, int], int], level: str = "") -> None:
    """Race `run(vol, uid) -> times caught` against a flipper until it is caught a few times.

    The flipped names sit in vol/<level> (a dir made for them when level is given): the
    top level is opened by the walking process itself, a deeper one by forked workers.
    """
    outside, vol, spare = tmp_path / "outside", tmp_path / "vol", tmp_path / "spare"
    make_files(outside, 3, 5)
    (outside / "secret").write_text("root's\n")
    os.chmod(outside / "secret", 0o600)
    before = owners(outside)
    make_files(vol, 8, 3)
    flipped = vol / level
    for i in range(8):  # siblings with their own subdirs: the parallel walker's subtrees
        if f"d{i}" != level:
            make_files(vol / f"d{i}", 4, 3)
    if level:
        make_files(flipped, 8, 3)
    spare.mkdir()
    pairs: list[str] = []
    for i in range(8):
        (spare / f"l{i}").symlink_to(outside)  # the dir becomes a link to outside/
        pairs += [str(flipped / f"d{i}"), str(spare / f"l{i}")]
        (flipped / f"f{i}").write_text("x")
        (spare / f"s{i}").symlink_to(outside / "secret")  # a file becomes a link to a secret
        pairs += [str(flipped / f"f{i}"), str(spare / f"s{i}")]
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, *pairs], stdout=subprocess.PIPE, text=True)
    runs = caught = 0
    try:
        assert flipper.stdout is not None and flipper.stdout.readline() == "flipping\n"
        # The window between listing a dir and opening it is microseconds wide: run until
        # the walker has been caught in it a few times (a few hundred runs, usually).
        deadline = time.monotonic() + 30
        while runs < 1000 or (caught < 3 and time.monotonic() < deadline):
            caught += run(vol, 1000 + runs % 2)  # alternate, so every run has everything to change
            runs += 1
    finally:
        flipper.kill()
        flipper.wait()
    assert owners(outside) == before
    assert caught > 0, f"the race never hit its window in {runs} runs"
    # and the volume is whole: a run after the race finishes the job
    assert volinit("apply", str(vol), "--owner", "1002", "--chown", "always").code == 0
    assert {u for u, _, _ in owners(vol).values()} == {1002}
    assert owners(outside) == before


def test_entries_swapped_for_symlinks_mid_walk_never_lead_outside(tmp_path: Path) -> None:
    def run(vol: Path, uid: int) -> int:
        plan = spec.from_flags([str(vol)], str(uid), None, "always", [], None)
        reports, errors = apply_spec(plan, dry_run=False, say=lambda _: None)
        if errors:  # raced in every walk of the run: the volume fails, its root unfixed
            assert [e.line() for e in errors] == [f"cannot finish {vol}: entries were renamed or replaced during "
                                                  "3 walks (stop the containers writing to this volume and rerun; "
                                                  "its root stays unfixed)"]
            return 1
        return reports[0].skips.counts.get(SKIP_VANISHED, 0)

    swap_race(tmp_path, run)


def test_entries_swapped_under_the_parallel_walkers_never_lead_outside(tmp_path: Path) -> None:
    # The parent opens the top level and hands each subtree to a forked worker at once
    # (parallel_after=1); the flipped names are one level down, so the workers meet them.
    def run(vol: Path, uid: int) -> int:
        fd = open_volume(str(vol))
        try:
            res = chown_tree(fd, os.fstat(fd), uid, uid, workers=2, parallel_after=1)
        finally:
            os.close(fd)
        return res.skips.counts.get(SKIP_VANISHED, 0)

    swap_race(tmp_path, run, level="d3")


def test_the_user_cannot_hard_link_a_root_file_into_the_volume(public: Path) -> None:
    # The walk changes non-directories by name after an lstat: a name swapped in that window
    # for a hard link to a file outside would be changed. protected_hardlinks (on by default)
    # is what stops a user making that link to a file they cannot already write.
    assert Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    secret = public / "secret"
    secret.write_text("root's\n")
    secret.chmod(0o644)
    vol = public / "vol"
    vol.mkdir()
    os.chown(vol, 1000, 1000)
    link = subprocess.run(["ln", str(secret), str(vol / "mine")], user=1000, group=1000, extra_groups=[],
                          capture_output=True, text=True)
    assert link.returncode != 0 and "Operation not permitted" in link.stderr
    assert not (vol / "mine").exists()


# --- Crash ---------------------------------------------------------------------------

CRASH_DIRS, CRASH_FILES = 200, 1000  # 200k files, on a tmpfs to build them in ~2 s


def test_kill_9_at_several_points_then_a_plain_rerun_finishes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        vol = fs / "vol"
        total = make_files(vol, CRASH_DIRS, CRASH_FILES)
        progress = []
        for delay in (0.0, 0.05, 0.1, 0.15):
            proc = start("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp", "--prune", "1h")
            wait_until_open(proc.pid, vol)
            time.sleep(delay)
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.kill()
            proc.communicate()
            # root-last: a killed run never leaves the root saying the walk is done
            assert os.stat(vol).st_uid == 0
            progress.append(count(vol, "-uid", "1000"))
        assert progress == sorted(progress)
        assert any(0 < done < total for done in progress), progress
        res = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp", "--prune", "1h")
        assert res.code == 0, res.err
        assert "walked" in res.err
        assert count(vol, "-uid", "1000") == count(vol) == total + 1  # and .tmp
        assert os.stat(vol).st_uid == 1000
        again = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp", "--prune", "1h")
        assert again.code == 0 and "walk skipped" in again.err


# --- Concurrency ---------------------------------------------------------------------


def test_two_applies_at_once_with_prune_both_succeed_and_leave_the_volume_whole(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        vol = fs / "vol"
        data = make_files(vol / "data", 100, 1000)
        old = time.time() - 2 * DAY
        make_files(vol / ".tmp", 20, 50, mtime=old)  # orphans of killed jobs
        for name in ("job.lock", "fresh"):
            (vol / ".tmp" / name).touch()
        os.utime(vol / ".tmp" / "job.lock", (old, old))
        spec_file = tmp_path / "volinit.yaml"
        spec_file.write_text(f"""version: 1
owner: "1000:1000"
volumes:
  {vol}:
    dirs:
      .tmp: {{mode: "1777", prune: 1h, keep: ["*.lock"]}}
      cache: {{}}
""")
        runs = [finish(p) for p in start_together(["apply", "-f", str(spec_file)], ["apply", "-f", str(spec_file)])]
        assert [r.code for r in runs] == [0, 0], [r.err for r in runs]
        # they did overlap: one waited for the other's lock, then found the root right
        assert any("waiting for another volinit run on this volume" in r.err for r in runs)
        assert count(vol / "data") == count(vol / "data", "-uid", "1000", "-gid", "1000") == data
        assert sorted(os.listdir(vol / ".tmp")) == ["fresh", "job.lock"]
        assert stat.S_IMODE(os.stat(vol / ".tmp").st_mode) == 0o1777
        assert os.stat(vol / "cache").st_uid == os.stat(vol).st_uid == 1000


def test_two_prunes_racing_tolerate_entries_vanishing_under_them(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        tmp = fs / "tmp"
        old = time.time() - 2 * DAY
        doomed = make_files(tmp, 200, 400, mtime=old)
        for name in ("x.lock", "fresh"):
            (tmp / name).touch()
        os.utime(tmp / "x.lock", (old, old))
        argv = ["prune", str(tmp), "--older-than", "1d", "--keep", "*.lock", "--json"]
        runs = [finish(p) for p in start_together(argv, argv)]
        assert [r.code for r in runs] == [0, 0], [r.err for r in runs]
        removed = [json.loads(r.out)["removed"] for r in runs]
        # each entry went exactly once, and both took part: they raced over the same entries
        assert sum(removed) == doomed and min(removed) > 0, removed
        assert sorted(os.listdir(tmp)) == ["fresh", "x.lock"]


# Renames one name back and forth as fast as it can: a subtree keeps leaving the place the
# walk is about to visit and coming back to one it has passed.
TOGGLER = r"""
import os, sys
a, b = sys.argv[1:3]
print("toggling", flush=True)
while True:
    for src, dst in ((a, b), (b, a)):
        try:
            os.rename(src, dst)
        except OSError:
            pass
"""


def test_a_subtree_renamed_during_the_walk_is_walked_before_the_root_is_fixed(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    for attempt in range(30):
        shutil.rmtree(vol, ignore_errors=True)
        make_files(vol / "sub", 4, 2000)
        toggler = subprocess.Popen([sys.executable, "-c", TOGGLER, str(vol / "sub/d0"), str(vol / "sub/d0x")],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert toggler.stdout is not None and toggler.stdout.readline() == "toggling\n"
            run = volinit("apply", str(vol), "--owner", "1000")
        finally:
            toggler.kill()
            toggler.wait()
        if "changed during walk" in run.err or run.code == 1:
            break
    else:
        pytest.fail("the rename never raced the walk in 30 attempts")
    if run.code == 1:  # renamed during every walk: the root stays wrong, so the rerun walks
        assert run.errors[0].startswith(f"volinit: error: cannot finish {vol}: entries were renamed"), run.err
        assert os.stat(vol).st_uid == 0
    # either way, a plain rerun (default policy) leaves nothing behind
    assert volinit("apply", str(vol), "--owner", "1000").code == 0
    assert {u for u, _, _ in owners(vol).values()} == {1000}, attempt


def test_prune_raced_by_dirs_swapped_with_symlinks_finishes_and_stays_inside(tmp_path: Path) -> None:
    # An entry stat'ed as a file may be a dir by the unlink, and a dir a symlink by the
    # rmdir: such an entry is left for the next run, never an error (nor followed).
    outside, vol = tmp_path / "outside", tmp_path / "vol"
    old = time.time() - 3 * DAY
    make_files(outside, 2, 20, mtime=old)
    before = sorted(p.name for p in outside.rglob("*"))
    for _ in range(10):
        shutil.rmtree(vol, ignore_errors=True)
        make_files(vol, 20, 20, mtime=old)
        pairs: list[str] = []
        for i in range(20):
            (vol / f"l{i}").symlink_to(outside / "d0")
            (vol / f"f{i}").write_text("x")
            os.utime(vol / f"f{i}", (old, old))
            pairs += [str(vol / f"d{i}"), str(vol / f"l{i}"), str(vol / f"f{i}"), str(vol / f"d{(i + 1) % 20}")]
        flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, *pairs], stdout=subprocess.PIPE, text=True)
        try:
            assert flipper.stdout is not None and flipper.stdout.readline() == "flipping\n"
            run = volinit("prune", str(vol), "--older-than", "1d", env={"VOLINIT_WORKERS": "2"})
        finally:
            flipper.kill()
            flipper.wait()
        assert run.code == 0, run.err
        assert sorted(p.name for p in outside.rglob("*")) == before


def test_hard_linked_fifos_sockets_and_symlinks_from_outside_are_skipped_too(public: Path) -> None:
    # Where fs.protected_hardlinks is off, a user can link any root-owned inode into the
    # volume, not only a regular file: a FIFO or socket given away is a channel handed over.
    import socket

    outside, vol = public / "outside", public / "vol"
    outside.mkdir()
    vol.mkdir()
    os.mkfifo(outside / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(outside / "sock"))
    sock.close()
    (outside / "link").symlink_to("/etc/shadow")
    for name in ("fifo", "sock", "link"):
        os.link(outside / name, vol / name, follow_symlinks=False)  # as root: stands in for protected_hardlinks=0
    run = volinit("apply", str(vol), "--owner", "1000", "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["volumes"][0]["skipped"]["by_reason"] == {"hard link": 3}
    assert {name: os.lstat(outside / name).st_uid for name in ("fifo", "sock", "link")} == {
        "fifo": 0, "sock": 0, "link": 0}


def test_prune_never_crosses_into_a_filesystem_mounted_in_its_dir(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    old = time.time() - 2 * DAY
    with tmpfs(tmp / "inner", "size=1m") as inner:
        for path in (tmp / "old", inner / "old-on-tmpfs"):
            path.touch()
            os.utime(path, (old, old))
        os.utime(inner, (old, old))  # the mount point looks old and empty-able too
        run = volinit("prune", str(tmp), "--older-than", "1d")
        assert run.code == 0, run.err
        assert sorted(os.listdir(tmp)) == ["inner"]
        assert os.listdir(inner) == ["old-on-tmpfs"]
        assert "removed 1 entries" in run.err and "skipped 1 inside other mounts" in run.err


def test_skipped_names_with_control_characters_cannot_forge_a_log_line(public: Path) -> None:
    vol = public / "vol"
    vol.mkdir()
    os.mknod(vol / "dev\nvolinit: all volumes fixed", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    (public / "root-file").write_text("x")
    os.link(public / "root-file", vol / "hl\x1b[2J\rvolinit: ok")
    run = volinit("apply", str(vol), "--owner", "1000")
    assert run.code == 0, run.err
    assert run.err.count("\n") == 1 and "\r" not in run.err and "\x1b" not in run.err, run.err
    assert "dev\\nvolinit: all volumes fixed (device node)" in run.err
    assert "hl\\x1b[2J\\rvolinit: ok (hard link)" in run.err


# --- Faults --------------------------------------------------------------------------


# The open-file limit can run out at either of two calls per directory: the open, or the
# dup inside scandir. Consecutive limits land on both; each must be the same one line.
@pytest.mark.parametrize("argv,env", [
    (["apply", "{vol}", "--owner", "1002", "--chown", "always"], {"VOLINIT_WORKERS": "1"}),
    (["apply", "{vol}", "--owner", "1002", "--chown", "always"], {"VOLINIT_WORKERS": "2"}),
    (["prune", "{vol}", "--older-than", "1d"], {"VOLINIT_WORKERS": "1"}),
], ids=["walk", "parallel-walk", "prune"])
def test_running_out_of_open_files_is_one_clear_line_wherever_it_happens(tmp_path: Path, argv: list[str],
                                                                       env: dict[str, str]) -> None:
    # Four deep chains beside 6000 files: enough entries for the parallel walk to hand the
    # chains to its workers, which then walk them depth first (the serial walks do the same).
    vol = tmp_path / "vol"
    make_files(vol, 1, 6000, mtime=time.time() - 3 * DAY)
    for i in range(4):
        (vol / f"c{i}").mkdir()
        make_chain(vol / f"c{i}", 200, file_per_level="f", mtime=time.time() - 3 * DAY)
    args = [a.format(vol=vol) for a in argv]
    failed, finished = [], []
    for limit in range(12, 80):
        run = volinit(*args, env=env, prefix=["sh", "-c", 'ulimit -n "$0" && exec "$@"', str(limit)])
        if run.code == 0:
            finished.append(limit)
            if len(finished) == 3:
                break
            continue
        assert not finished, (finished, limit)  # more fds never make it fail
        failed.append(limit)
        assert run.code == 1, (limit, run.err)
        assert len(run.errors) == 1 and run.errors[0].endswith(
            ": Too many open files (raise the open-file limit (ulimits: nofile) for the volinit service)"), run.err
    # low limits fail at consecutive calls (the open and scandir's dup); past them the
    # 200-deep chains finish with a few dozen fds (the old walk took 400): depth costs none
    assert len(failed) >= 2 and failed == list(range(12, failed[-1] + 1)), failed
    assert failed[-1] < 64, failed
    assert volinit(*args, env=env).code == 0


def test_a_read_only_volume_is_one_clear_error_and_the_next_run_finishes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "size=16m") as vol:
        total = make_files(vol, 5, 20)
        subprocess.run(["mount", "-o", "remount,ro", str(vol)], check=True)
        res = volinit("apply", str(vol), "--owner", "1000", "--dir", ".tmp")
        assert res.code == 1
        [line] = res.errors
        assert f"cannot change owner of {vol}/d" in line
        assert "Read-only file system (the volume is mounted read-only; mount it read-write" in line
        subprocess.run(["mount", "-o", "remount,rw", str(vol)], check=True)
        assert volinit("apply", str(vol), "--owner", "1000", "--dir", ".tmp").code == 0
        assert count(vol, "-uid", "1000") == total + 1 and os.stat(vol).st_uid == 1000


def test_a_full_filesystem_while_creating_dirs_is_one_clear_error_and_the_next_run_finishes(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", "size=16m,nr_inodes=64") as vol:
        filler = 0
        with contextlib.suppress(OSError):  # ENOSPC: out of inodes
            while True:
                (vol / f"filler{filler}").touch()
                filler += 1
        argv = ["apply", str(vol), "--owner", "1000", "--dir", ".tmp/jobs", "--dir", "cache"]
        res = volinit(*argv)
        assert res.code == 1
        assert res.errors == [f"volinit: error: cannot create {vol}/.tmp: No space left on device "
                              "(the filesystem is full; free space or grow the volume)"]
        assert os.stat(vol).st_uid == 0  # not claimed done
        for i in range(3):
            (vol / f"filler{i}").unlink()
        assert volinit(*argv).code == 0
        for rel in (".tmp", ".tmp/jobs", "cache"):
            assert os.stat(vol / rel).st_uid == 1000
        assert count(vol, "-uid", "1000") == count(vol) and os.stat(vol).st_uid == 1000


def test_without_cap_chown_it_says_so_and_the_next_run_finishes(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    total = make_files(vol, 3, 10)
    # root without CAP_CHOWN in its bounding set, as in a container with cap_drop: [ALL]
    res = volinit("apply", str(vol), "--owner", "1000", prefix=("setpriv", "--bounding-set", "-chown", "--"))
    assert res.code == 1
    [line] = res.errors
    assert f"cannot change owner of {vol}/d" in line
    assert "Operation not permitted (volinit needs root with CAP_CHOWN" in line
    assert os.stat(vol).st_uid == 0
    assert volinit("apply", str(vol), "--owner", "1000").code == 0
    assert count(vol, "-uid", "1000") == total and os.stat(vol).st_uid == 1000


# --- Signals -------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_walk_ends_it_promptly_and_a_rerun_finishes(tmp_path: Path, sig: int, code: int,
                                                                  word: str) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        vol = fs / "vol"
        total = make_files(vol, 100, 1000)
        proc = start("apply", str(vol), "--owner", "1000")
        wait_until_open(proc.pid, vol)
        time.sleep(0.05)
        assert proc.poll() is None, "the walk ended before the signal"
        sent = time.monotonic()
        proc.send_signal(sig)
        res = finish(proc, timeout=10)
        assert res.code == code and time.monotonic() - sent < 1
        assert res.errors == [f"volinit: error: {word}; rerun to finish "
                              "(the volume root is fixed last, so a rerun walks again)"]
        assert 0 < count(vol, "-uid", "1000") < total  # stopped midway,
        assert os.stat(vol).st_uid == 0  # and the root says so
        assert volinit("apply", str(vol), "--owner", "1000").code == 0
        assert count(vol, "-uid", "1000") == total and os.stat(vol).st_uid == 1000


def test_a_user_holding_the_volume_lock_delays_the_init_until_it_is_stopped(public: Path) -> None:
    vol = public / "vol"
    make_files(vol, 2, 2)
    # flock needs only a read-only fd, so the volume's user can take the lock volinit takes
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\ntime.sleep(600)", str(vol)],
        user=1000, group=1000, extra_groups=[], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        proc = start("apply", str(vol), "--owner", "1000")
        assert proc.stderr is not None
        assert proc.stderr.readline() == f"volinit: {vol}: waiting for another volinit run on this volume\n"
        time.sleep(0.2)
        assert proc.poll() is None and count(vol, "-uid", "1000") == 0  # waiting, touching nothing
        proc.send_signal(signal.SIGTERM)  # docker stop
        assert finish(proc, timeout=5).code == 143
    finally:
        holder.kill()
        holder.wait()
    assert volinit("apply", str(vol), "--owner", "1000").code == 0


# --- Bad input at scale --------------------------------------------------------------

GOOD_SPEC = """version: 1
owner: "1000:1000"
volumes:
  /app/cache:
    owner: "1000:1000"
    mode: "0750"
    chown: on-root-mismatch
    hardlinks: skip
    dirs:
      .tmp:
        mode: "0700"
        prune: 24h
        keep: ["*.lock"]
      datalab: {}
  /app/models: {}
"""
YAML_NOISE = ":-{}[],&*!|>'\"%@`#?\n\t /.\\0123456789ahsx~\x00\x85\u2028\ufeff"
WORDS = ["1000", "1000:1000", "0:0", "4294967294", "4294967295", "-1", "0750", "1777", "9999", "24h",
         "1d12h", "0s", "90m", "1w", "5300w", "9" * 30 + "s", "always", "never", "skip", "chown",
         "on-root-mismatch", "*.lock", "[z-a]", ".tmp", "a/b", "../x", "a/../..", ".", "/abs", "/",
         "/etc", "/usr/lib", "/var/lib/docker/v", "/lib64", "/data", "/app/cache", "/tmp/x", "",
         " ", "\x00", "\n", "~", "null", "!!binary AAAA", "&a", "*a"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                    st.text(max_size=20), st.sampled_from(WORDS))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(WORDS), inner, max_size=3),
                      max_leaves=8)


def either(*good: str) -> st.SearchStrategy:
    return st.sampled_from(good) | values


dir_bodies = st.fixed_dictionaries({}, optional={
    "mode": either("0700", "1777"), "prune": either("24h", "90m"), "keep": either(["*.lock"], "*.pid"),
    "bogus": values})
volume_bodies = st.fixed_dictionaries({}, optional={
    "owner": either("1000", "1000:1000"), "mode": either("0750"), "chown": either("always", "never"),
    "hardlinks": either("skip", "chown"), "bogus": values,
    "dirs": st.dictionaries(st.sampled_from([".tmp", "cache/models", "a/./b"]) | scalars, dir_bodies | values,
                            max_size=3) | values})
documents = st.fixed_dictionaries({}, optional={
    "version": st.sampled_from([1, 2, "1", 1.0, True, None]) | values, "owner": either("1000:1000", "0"),
    "volumes": st.dictionaries(st.sampled_from(["/data", "/app/cache", "/srv/x/", "/data//y/.."]) | scalars,
                               volume_bodies | values, max_size=3) | values,
    "bogus": values})


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A text with a few characters inserted, deleted or replaced: typos, bad pastes."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:at] + draw(st.text(alphabet=YAML_NOISE, max_size=3)) + text[at + cut:]
    return text


spec_texts = st.one_of(
    mutated(st.just(GOOD_SPEC)),
    mutated(documents.map(lambda doc: yaml.safe_dump(doc, allow_unicode=True))),
    st.text(max_size=200),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_texts)
def test_the_spec_loader_accepts_only_safe_specs_and_reports_the_rest_in_one_line(text: str) -> None:
    try:
        loaded = spec.loads(text)
    except SpecError as exc:  # anything else escaping is a bug (exit 3 and a traceback)
        assert exc.exit_code == 2
        assert "\n" not in exc.line() and exc.line().startswith("spec")
        return
    for vol in loaded.volumes:
        parts = vol.path.split("/")[1:]
        assert vol.path.startswith("/") and "" not in parts and ".." not in parts and "." not in parts
        assert not spec._is_system_path(parts)
        assert 0 <= vol.owner.uid <= 2**32 - 2 and 0 <= vol.owner.gid <= 2**32 - 2
        for d in vol.dirs:
            rel = d.path.split("/")
            assert "" not in rel and ".." not in rel and "." not in rel  # never leaves its volume
            assert d.prune is None or 0 < d.prune <= 100 * 365 * DAY


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The only place the CLI fuzz may touch: a volume, a temp dir, a spec file, and cwd."""
    box = tmp_path_factory.mktemp("fuzz")
    make_files(box / "vol", 2, 3)
    make_files(box / "vol" / ".tmp", 2, 3, mtime=time.time() - 2 * DAY)
    (box / "spec.yaml").write_text(GOOD_SPEC.replace("/app/cache", str(box / "vol")))
    cwd, env = os.getcwd(), os.environ.get(cli.SPEC_ENV)
    os.chdir(box)  # relative DIRs resolve in here
    os.environ[cli.SPEC_ENV] = str(box / "spec.yaml")  # `apply` alone reads this
    sigterm = signal.getsignal(signal.SIGTERM)
    yield box
    signal.signal(signal.SIGTERM, sigterm)  # cli.main installs its own
    os.chdir(cwd)
    if env is None:
        del os.environ[cli.SPEC_ENV]
    else:
        os.environ[cli.SPEC_ENV] = env


def cli_args(box: Path) -> st.SearchStrategy[list[str]]:
    """Flags for apply, prune and doctor, naming no path but the sandbox's and refused ones.

    Safe by construction, as this runs as root on the host: free text has no '/' or '.'
    (so no absolute path and no '..'; relative paths resolve inside the sandbox).
    """
    text = st.text(alphabet=st.characters(blacklist_characters="/.\x00", blacklist_categories=("Cs",)),
                   max_size=12)
    paths = st.sampled_from([str(box / "vol"), str(box / "vol" / ".tmp"), str(box / "missing"),
                             str(box / "spec.yaml"), *REFUSED]) | text
    words = st.sampled_from(WORDS[:20]) | text
    flags = {
        "apply": ["--owner", "--mode", "--chown", "--dir", "--prune", "-f", "--dry-run", "--json", "--bogus"],
        "prune": ["--older-than", "--keep", "--dry-run", "--json", "-x"],
        "doctor": ["--min-free", "--path", "--json", "--nope"],
    }

    @st.composite
    def anything(draw: st.DrawFn) -> list[str]:
        cmd = draw(st.sampled_from([*flags, "bogus", "--version", "--help", ""]))
        out = [cmd] if cmd else []
        for _ in range(draw(st.integers(0, 6))):
            if cmd in flags and draw(st.booleans()):
                out.append(draw(st.sampled_from(flags[cmd])))
            out.append(draw(paths | words))
        return out

    def odd(*good: str) -> st.SearchStrategy[str]:
        return st.sampled_from(good) | words

    values = {"--owner": odd("1000", "1000:1000", "0", "4294967294"), "--mode": odd("0750", "1777"),
              "--chown": odd("always", "never", "on-root-mismatch"), "--dir": odd(".tmp", "cache/x", "a"),
              "--prune": odd("24h", "1d12h", "1s"), "--older-than": odd("24h", "90m", "1s"),
              "--keep": odd("*.lock", "[a-", "*")}

    @st.composite
    def nearly_right(draw: st.DrawFn) -> list[str]:
        """A well-formed command with odd values, so parsing gets past the flags."""
        if draw(st.booleans()):
            out = ["apply", draw(paths), "--owner", draw(values["--owner"])]
            for flag in ("--mode", "--chown", "--dir", "--prune"):
                if draw(st.booleans()):
                    out += [flag, draw(values[flag])]
        else:
            out = ["prune", draw(paths), "--older-than", draw(values["--older-than"])]
            for _ in range(draw(st.integers(0, 2))):
                out += ["--keep", draw(values["--keep"])]
        return out + draw(st.sampled_from([[], ["--dry-run"], ["--json"]]))

    return anything() | nearly_right()


def test_cli_flags_under_generated_input_exit_0_1_or_2_and_never_trace(sandbox: Path) -> None:
    inside = str(sandbox) + "/"
    # The spec is mutated with a placeholder volume path: no mutation of "/app/cache" with
    # YAML_NOISE names an existing dir; only an intact placeholder becomes the sandbox.
    specs = mutated(st.just(GOOD_SPEC)).map(lambda text: text.replace("/app/cache", str(sandbox / "vol")))

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(cli_args(sandbox), specs)
    def run(argv: list[str], spec_text: str) -> None:
        for arg in argv:  # the guard against a fuzzer that chowns or prunes the host
            assert not arg.startswith("/") or arg in REFUSED or arg.startswith(inside), arg
            assert ".." not in arg or arg in REFUSED, arg
        (sandbox / "spec.yaml").write_text(spec_text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        assert code in (0, 1, 2), (argv, err.getvalue())
        assert "Traceback" not in err.getvalue(), err.getvalue()
        assert os.path.isdir(sandbox / "vol")
        codes[code] = codes.get(code, 0) + 1

    codes: dict[int, int] = {}
    run()
    assert set(codes) == {0, 1, 2}, codes  # every outcome was reached


# Prune over generated trees: leaves are (kind, old); a dir is ("dir", old, children).
NAMES = st.sampled_from(["a", "b", "c.lock", "d.tmp", "e", "x.lock"])
LEAVES = st.tuples(st.sampled_from(["file", "link-dir", "link-file"]), st.booleans())
NODES = st.recursive(LEAVES, lambda inner: st.tuples(st.just("dir"), st.booleans(),
                                                      st.dictionaries(NAMES, inner, max_size=4)), max_leaves=25)
TREES = st.dictionaries(NAMES, NODES, max_size=5)


def build(where: Path, children: dict, outside: Path, now: float) -> None:
    for name, node in children.items():
        path = where / name
        kind, old = node[0], node[1]
        if kind == "dir":
            path.mkdir()
            build(path, node[2], outside, now)  # children first: they would bump the dir's mtime
        elif kind == "file":
            path.write_bytes(b"x")
        else:
            path.symlink_to(outside if kind == "link-dir" else outside / "precious")
        when = now - (3 * DAY if old else DAY / 2)
        os.utime(path, (when, when), follow_symlinks=False)


def survivors(children: dict, keep: list[str], base: str = "") -> set[str]:
    """What prune must leave: kept names (whole), young entries, dirs young or not empty."""
    out: set[str] = set()
    for name, node in children.items():
        rel = f"{base}/{name}" if base else name
        if any(fnmatch.fnmatchcase(name, glob) for glob in keep):
            out |= {rel} | (survivors(node[2], ["*"], rel) if node[0] == "dir" else set())
        elif node[0] == "dir":
            inner = survivors(node[2], keep, rel)
            if inner or not node[1]:
                out |= {rel} | inner
        elif not node[1]:
            out.add(rel)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES, st.lists(st.sampled_from(["*.lock", "d*", "[bc]*", "*.tmp"]), max_size=2, unique=True))
def test_prune_removes_exactly_the_old_entries_and_nothing_outside_its_dir(tree: dict, keep: list[str]) -> None:
    box = Path(tempfile.mkdtemp(prefix="volinit-prune-"))
    try:
        now = time.time()
        outside, top = box / "outside", box / "tmp"
        outside.mkdir()
        (outside / "precious").write_text("keep me\n")
        top.mkdir()
        build(top, tree, outside, now)
        for path in (outside / "precious", outside, top):  # old, so only the rules protect them
            os.utime(path, (now - 9 * DAY, now - 9 * DAY))
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        try:
            prune_dir(fd, DAY, keep)
        finally:
            os.close(fd)
        assert {rel for rel, _ in entries(top)} == survivors(tree, keep)
        assert sorted(os.listdir(outside)) == ["precious"] and top.is_dir()
    finally:
        subprocess.run(["rm", "-rf", str(box)], check=True)
