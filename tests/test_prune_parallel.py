"""Prune shared among forked workers removes exactly what one process removes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from volinit import prune
from volinit.errors import OperationError

DAY = 86400


def old(path: Path, days: float = 3) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t), follow_symlinks=False)


def make_tmpdir(top: Path) -> None:
    """Orphans of killed jobs (old), live jobs (fresh), old dirs holding one fresh file,
    kept lock files, links, at several depths."""
    for j in range(16):
        job = top / f"job{j}"
        (job / "sub" / "deeper").mkdir(parents=True)
        for f in range(5):
            for d in (job, job / "sub", job / "sub" / "deeper"):
                (d / f"part{f}").write_text("x")
        if j % 8 == 6:  # an old job whose lock file is kept, so its dir stays
            (job / "run.lock").write_text("")
        (job / "link").symlink_to("/etc/passwd")
        is_old = j % 2 == 0
        for path in sorted(job.rglob("*"), key=lambda p: -len(p.parts)):
            if is_old and not (j % 4 == 0 and path.name == "part4" and path.parent.name == "deeper"):
                old(path)
        if is_old:
            for d in (job / "sub" / "deeper", job / "sub", job):
                old(d)
    (top / "loose-old").write_text("x")
    old(top / "loose-old")
    (top / "loose-fresh").write_text("x")


def listing(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def run(top: Path, workers: int, **kw) -> prune.PruneResult:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return prune.prune_dir(fd, DAY, ["*.lock"], workers=workers, parallel_after=0, **kw)
    finally:
        os.close(fd)


@pytest.mark.parametrize("dry_run", [False, True])
def test_workers_remove_exactly_what_one_process_removes(tmp_path: Path, dry_run: bool) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for top in (one, two):
        top.mkdir()
        make_tmpdir(top)
    a = run(one, 1, dry_run=dry_run)
    b = run(two, 2, dry_run=dry_run)
    assert (a.removed, a.bytes, a.kept, a.skips.counts) == (b.removed, b.bytes, b.kept, b.skips.counts)
    assert listing(one) == listing(two)
    assert b.removed > 0 and b.kept > 0
    if not dry_run:
        # whole old jobs went; an old job holding one fresh file keeps that file's dirs
        names = listing(two)
        assert "job2" not in names and "job0/sub/deeper/part4" in names and "job1/part0" in names
        assert names.count("job6") == 1 and "job6/run.lock" in names and "job6/sub" not in names
        assert "loose-old" not in names and "loose-fresh" in names
        assert run(two, 2).removed == 0  # and nothing is left to do


def test_workers_stay_out_of_a_filesystem_mounted_inside(tmp_path: Path, as_root: None) -> None:
    top = tmp_path / "tmp"
    top.mkdir()
    make_tmpdir(top)
    mnt = top / "job3" / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "inner").write_text("x")
        old(mnt / "inner")
        res = run(top, 2)
        assert res.skips.counts == {"another mount": 1}
        assert (mnt / "inner").exists()
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_worker_that_cannot_remove_fails_the_prune(tmp_path: Path, monkeypatch) -> None:
    top = tmp_path / "tmp"
    top.mkdir()
    make_tmpdir(top)
    real = os.unlink

    def refuse(name, *args, **kw):  # the workers are forks: they see this patch too
        if name == "part3":
            raise PermissionError(1, "Operation not permitted")
        return real(name, *args, **kw)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(OperationError) as caught:
        run(top, 2)
    assert "cannot remove" in caught.value.line() and "part3" in caught.value.line()


def test_a_worker_killed_midway_fails_the_prune(tmp_path: Path, monkeypatch) -> None:
    top = tmp_path / "tmp"
    top.mkdir()
    make_tmpdir(top)
    real, parent = os.unlink, os.getpid()

    def die(name, *args, **kw):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(name, *args, **kw)

    monkeypatch.setattr(os, "unlink", die)
    with pytest.raises(OperationError) as caught:
        run(top, 2)
    assert "walk worker" in caught.value.line()
