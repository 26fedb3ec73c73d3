"""The chown walk shared among forked workers does exactly what the single-process walk does.

Each test forces the workers on a small tree (workers=2, parallel_after=0) and compares
with workers=1: same owners, same counts, same skips, and a worker's failure fails the walk.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from volinit import walk
from volinit.errors import OperationError

pytestmark = pytest.mark.usefixtures("as_root")


def make_tree(root: Path, dirs: int = 12, files: int = 6) -> None:
    """Nested dirs with files, symlinks (one dangling), a hard-linked pair, a device node."""
    for d in range(dirs):
        sub = root / f"d{d}" / f"e{d % 3}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f}").write_text("x")
        (sub / "link").symlink_to("f0")
        (sub / "dangling").symlink_to("nowhere")
    os.link(root / "d0" / "e0" / "f0", root / "d1" / "e1" / "hard")
    os.mknod(root / "d2" / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    (root / "lost+found").mkdir()
    (root / "lost+found" / "x").write_text("e2fsck's")


def tree_owners(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_uid, st.st_gid)
    return out


def chown(root: Path, workers: int, **kw) -> walk.ChownResult:
    fd = walk.open_volume(str(root))
    try:
        return walk.chown_tree(fd, os.fstat(fd), 1000, 1001, workers=workers, parallel_after=0, **kw)
    finally:
        os.close(fd)


@pytest.mark.parametrize("hardlinks", ["skip", "chown"])
def test_workers_change_and_skip_exactly_what_one_process_does(tmp_path: Path, hardlinks: str) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one)
    make_tree(two)
    a = chown(one, 1, hardlinks=hardlinks)
    b = chown(two, 2, hardlinks=hardlinks)
    assert (a.entries, a.changed, a.skips.counts) == (b.entries, b.changed, b.skips.counts)
    assert b.changed > 0 and b.skips.counts["device node"] == 1
    assert len(b.skips.samples) <= walk.SKIP_SAMPLES
    assert tree_owners(one) == tree_owners(two)
    # the root is the caller's to fix, last; lost+found is e2fsck's
    assert os.lstat(two).st_uid == 0
    assert os.lstat(two / "lost+found" / "x").st_uid == 0
    # and a second walk finds nothing left to change
    assert chown(two, 2, hardlinks=hardlinks).changed == 0


def test_dry_run_in_workers_counts_without_changing(tmp_path: Path) -> None:
    make_tree(tmp_path / "vol")
    before = tree_owners(tmp_path / "vol")
    res = chown(tmp_path / "vol", 2, dry_run=True)
    assert res.changed > 0
    assert tree_owners(tmp_path / "vol") == before


def test_workers_stay_out_of_a_filesystem_mounted_inside(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    make_tree(vol)
    mnt = vol / "d3" / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "inner").write_text("x")
        res = chown(vol, 2)
        assert res.skips.counts["another mount"] == 1
        assert os.lstat(mnt).st_uid == 0 and os.lstat(mnt / "inner").st_uid == 0
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_failing_worker_fails_the_walk_naming_the_entry(tmp_path: Path, monkeypatch) -> None:
    make_tree(tmp_path / "vol")
    real = os.chown

    def refuse(name, *args, **kw):  # the workers are forks: they see this patch too
        if name == "f3":
            raise PermissionError(1, "Operation not permitted")
        return real(name, *args, **kw)

    monkeypatch.setattr(os, "chown", refuse)
    with pytest.raises(OperationError) as caught:
        chown(tmp_path / "vol", 2)
    assert "cannot change owner of" in caught.value.line() and "/f3" in caught.value.line()
    assert "CAP_CHOWN" in caught.value.line()


def test_a_worker_killed_midway_fails_the_walk(tmp_path: Path, monkeypatch) -> None:
    make_tree(tmp_path / "vol")
    real = os.chown
    parent = os.getpid()

    def die(name, *args, **kw):
        if name == "f2" and os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(name, *args, **kw)

    monkeypatch.setattr(os, "chown", die)
    with pytest.raises(OperationError) as caught:
        chown(tmp_path / "vol", 2)
    assert "walk worker" in caught.value.line() and "signal 9" in caught.value.line()


def test_when_no_worker_can_be_forked_the_parent_walks_alone(tmp_path: Path, monkeypatch) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one)
    make_tree(two)
    expected = chown(one, 1)

    def refuse() -> int:  # docker run --pids-limit, or a seccomp profile without fork
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    res = chown(two, 2)
    assert (res.entries, res.changed, res.skips.counts) == (expected.entries, expected.changed, expected.skips.counts)
    assert tree_owners(one) == tree_owners(two)


def test_workers_publish_progress_to_the_parent(tmp_path: Path, monkeypatch) -> None:
    # slow every change down so the walk lasts a few of the parent's one-second polls
    make_tree(tmp_path / "vol", dirs=40, files=30)
    real = os.chown
    monkeypatch.setattr(walk, "PROGRESS_EVERY", 16)

    def slow(*args, **kw):
        import time

        time.sleep(0.003)
        return real(*args, **kw)

    monkeypatch.setattr(os, "chown", slow)
    seen: list[int] = []
    res = chown(tmp_path / "vol", 2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] <= res.entries
    assert max(seen) > 100  # more than the parent saw alone: the workers' counts arrived


def test_thousands_of_subtrees_open_at_once(tmp_path: Path) -> None:
    # more fds than select() can watch: the workers' result pipes land above 1024
    vol = tmp_path / "vol"
    for d in range(1500):
        (vol / f"d{d}").mkdir(parents=True)
        (vol / f"d{d}" / "f").write_text("x")
    res = chown(vol, 2)
    assert res.entries == 3000 and res.changed == 3000


def test_default_workers_honours_volinit_workers(monkeypatch) -> None:
    from volinit import parallel

    monkeypatch.setenv("VOLINIT_WORKERS", "1")
    assert parallel.default_workers() == 1
    monkeypatch.setenv("VOLINIT_WORKERS", "3")
    assert parallel.default_workers() == 3
    monkeypatch.setenv("VOLINIT_WORKERS", "99999999999999999999")  # more than any machine: the cap
    assert parallel.default_workers() == parallel.MAX_WORKERS
    monkeypatch.delenv("VOLINIT_WORKERS")
    assert 1 <= parallel.default_workers() <= parallel.MAX_WORKERS
