"""Mounts inside a volume are left alone, told by mount identity (volinit/mounts.py).

Docker's named volumes and host bind mounts share the host filesystem's st_dev, so these
tests build exactly that on the host: a bind mount of a directory (and of a single file)
from the same filesystem inside a volume. Also the cases where st_dev misleads the other
way (overlayfs lower layers), and lost+found. The real-container half is in
tests/test_security_container.py.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import make_chain, volinit
from test_security import make_files, owners, tmpfs

from volinit import mounts, spec, walk
from volinit.apply import VolumeReport, apply_volume
from volinit.prune import prune_dir

pytestmark = pytest.mark.usefixtures("as_root")

DAY = 86400


@contextlib.contextmanager
def bind(source: Path, target: Path) -> Iterator[Path]:
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.touch()
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def host_dir(where: Path) -> Path:
    """What a host bind mount exposes: root's secret, another uid's files, old files."""
    make_files(where, 2, 3, mtime=time.time() - 3 * DAY)
    (where / "secret.key").write_text("root's\n")
    os.chmod(where / "secret.key", 0o600)
    os.chown(where / "d0", 2000, 2000)
    os.chown(where / "d0" / "f0", 2000, 2000)
    return where


def apply_in_one_process(vol: Path, progress) -> VolumeReport:
    """apply_volume on vol for owner 1000:1000, one walking process (so `progress` runs
    where the walk is, and can change the tree under it at a known point)."""
    volspec = spec.loads(f'version: 1\nowner: "1000:1000"\nvolumes:\n  {vol}: {{}}\n').volumes[0]
    os.environ["VOLINIT_WORKERS"] = "1"
    try:
        return apply_volume(volspec, dry_run=False, say=lambda line: None, progress=progress)
    finally:
        del os.environ["VOLINIT_WORKERS"]


def test_mount_table_paths_are_unescaped() -> None:
    # the kernel escapes space, tab, newline and backslash, but a carriage return comes as is
    table = (b"36 25 8:1 / /data rw - ext4 /dev/sda1 rw\n"
             b"37 36 8:1 /x /data/a\\040b\\012c rw - ext4 /dev/sda1 rw\n"
             b"38 36 0:5 / /data/a\\040b\\012c rw - tmpfs tmpfs rw\n"
             b"39 36 0:6 / /data/cr\rx/m rw - tmpfs tmpfs rw\n")
    lines = [(m.id, m.parent, m.point, m.fstype) for m in mounts.parse_table(table)]
    assert lines == [(36, 25, b"/data", b"ext4"), (37, 36, b"/data/a b\nc", b"ext4"), (38, 36, b"/data/a b\nc", b"tmpfs"),
                     (39, 36, b"/data/cr\rx/m", b"tmpfs")]


def test_a_mount_point_named_with_a_carriage_return_is_still_left_alone(public_dir: Path) -> None:
    box = Path(public_dir) / f"cr-{os.getpid()}"
    vol, outside = box / "vol", host_dir(box / "outside")
    make_files(vol, 1, 2)
    try:
        with bind(outside, vol / "a\rb"):
            before = owners(outside)
            run = volinit("apply", str(vol), "--owner", "1000:1000", "--chown", "always")
            assert run.code == 0, run.err
            assert owners(outside) == before and "1 another mount" in run.err
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(box)], check=False)


@pytest.mark.parametrize("argv", [
    ["--chown", "always"],
    [],  # the first run on a root-owned volume walks too
], ids=["always", "first-run"])
def test_a_host_bind_mount_on_the_same_filesystem_inside_a_volume_is_never_chowned(
        public_dir: Path, argv: list[str]) -> None:
    box = Path(public_dir) / f"bind-{os.getpid()}-{len(argv)}"
    vol, outside = box / "vol", host_dir(box / "etc-myapp")
    make_files(vol, 2, 2)
    (box / "config.json").write_text("{}\n")
    os.chmod(box / "config.json", 0o600)
    try:
        with bind(outside, vol / "conf"), bind(box / "config.json", vol / "config.json"):
            # the case a tmpfs-based test misses: the mount shares the volume's device number
            assert os.stat(vol / "conf").st_dev == os.stat(vol).st_dev == os.stat(vol / "config.json").st_dev
            before = owners(outside)
            file_before = os.stat(box / "config.json")
            run = volinit("apply", str(vol), "--owner", "1000:1000", *argv)
            assert run.code == 0, run.err
            assert owners(outside) == before
            after = os.stat(box / "config.json")
            assert (after.st_uid, after.st_gid, after.st_mode) == (file_before.st_uid, file_before.st_gid,
                                                                 file_before.st_mode)
            assert "2 another mount" in run.err and "conf (another mount)" in run.err
            assert "config.json (another mount)" in run.err
        # the volume's own entries were given away all the same
        assert {o[:2] for rel, o in owners(vol).items() if rel not in ("conf", "config.json")} == {(1000, 1000)}
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(box)], check=False)


def test_prune_and_dirs_leave_a_bind_mount_inside_the_dir_alone(public_dir: Path) -> None:
    box = Path(public_dir) / f"prune-bind-{os.getpid()}"
    vol, shared, tmp_mount = box / "vol", host_dir(box / "shared"), host_dir(box / "tmp-elsewhere")
    make_files(vol / ".tmp", 1, 2, mtime=time.time() - 3 * DAY)  # the volume's own orphans go
    try:
        with bind(shared, vol / ".tmp" / "shared"), bind(tmp_mount, vol / "cache"):
            before_shared, before_tmp = owners(shared), owners(tmp_mount)
            run = volinit("apply", str(vol), "--owner", "1000:1000", "--chown", "always",
                          "--dir", ".tmp", "--dir", "cache", "--prune", "1d")
            assert run.code == 0, run.err
            # nothing on the inner mounts changed, nothing there was removed
            assert owners(shared) == before_shared and owners(tmp_mount) == before_tmp
            assert ".tmp/shared (another mount)" in run.err and "cache (another mount)" in run.err
            assert not (vol / ".tmp" / "d0").exists()  # the volume's own old entries were pruned
        run = volinit("prune", str(vol / ".tmp"), "--older-than", "1d")
        assert run.code == 0
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(box)], check=False)


def test_volinit_prune_stays_out_of_a_same_filesystem_bind_mount(public_dir: Path) -> None:
    box = Path(public_dir) / f"prune-cli-{os.getpid()}"
    tmpdir, shared = box / "tmp", host_dir(box / "shared")
    tmpdir.mkdir(parents=True)
    try:
        with bind(shared, tmpdir / "shared"):
            before = owners(shared)
            run = volinit("prune", str(tmpdir), "--older-than", "1d")
            assert run.code == 0, run.err
            assert owners(shared) == before
            assert "skipped 1 inside other mounts" in run.err
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(box)], check=False)


def test_overlayfs_files_from_a_lower_layer_on_another_filesystem_are_given_away(public_dir: Path) -> None:
    # The lower layer lives on a tmpfs, the upper on the disk: overlayfs reports the lower
    # files with the tmpfs's st_dev. They are the volume's own files, on the volume's mount.
    box = Path(public_dir) / f"overlay-{os.getpid()}"
    vol = box / "vol"
    upper, work = box / "upper", box / "work"
    for d in (vol, upper, work):
        d.mkdir(parents=True)
    try:
        with tmpfs(box / "lower", "size=8m") as lower:
            make_files(lower, 2, 3)
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            f"lowerdir={lower},upperdir={upper},workdir={work}", str(vol)], check=True)
            try:
                assert os.stat(vol / "d0" / "f0").st_dev != os.stat(vol).st_dev
                run = volinit("apply", str(vol), "--owner", "1000:1000")
                assert run.code == 0, run.err
                assert {o[:2] for o in owners(vol).values()} == {(1000, 1000)}, run.err
                again = volinit("apply", str(vol), "--owner", "1000:1000")
                assert "root already right, walk skipped" in again.err
            finally:
                subprocess.run(["umount", "-l", str(vol)], check=False)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(box)], check=False)


@contextlib.contextmanager
def ext4(where: Path) -> Iterator[Path]:
    """A small ext4 filesystem mounted at where: its root holds mkfs's lost+found (inode 11)."""
    image = where.with_suffix(".img")
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        image.unlink()


def as_uid_1000(*cmd: str) -> None:
    subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", *cmd], check=True)


def orphan(vol: Path) -> Path:
    """What fsck leaves in lost+found: a file of root's, from anywhere on the filesystem."""
    found = vol / "lost+found"
    assert os.stat(found).st_ino == 11
    (found / "#1234").write_text("root's recovered data\n")
    os.chmod(found / "#1234", 0o600)
    old = time.time() - 3 * DAY
    os.utime(found / "#1234", (old, old))
    return found


def test_lost_found_renamed_by_the_volume_user_is_still_left_alone(public_dir: Path) -> None:
    with ext4(Path(public_dir) / f"ext4-walk-{os.getpid()}") as vol:
        orphan(vol)
        os.chown(vol, 1000, 1000)
        as_uid_1000("mv", str(vol / "lost+found"), str(vol / "stuff"))
        os.chown(vol, 1000, 0)  # the root's group is wrong, so this run walks
        run = volinit("apply", str(vol), "--owner", "1000:1000")
        assert run.code == 0, run.err
        assert "stuff (excluded)" in run.err
        st = os.stat(vol / "stuff" / "#1234")
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_a_dirs_entry_volinit_did_not_make_is_refused_and_nothing_changes(public_dir: Path) -> None:
    with ext4(Path(public_dir) / f"ext4-dirs-{os.getpid()}") as vol:
        found = orphan(vol)
        os.chown(vol, 1000, 1000)
        as_uid_1000("mv", str(found), str(vol / ".tmp"))
        before = owners(vol)
        run = volinit("apply", str(vol), "--owner", "1000:1000", "--chown", "always", "--dir", ".tmp",
                      "--prune", "1d")
        assert run.code == 1
        assert run.errors == [f"volinit: error: will not adopt {vol}/.tmp: it is the filesystem's lost+found "
                              "(inode 11), renamed (move it back to lost+found; volinit then makes a fresh dir)"]
        assert owners(vol) == before  # the orphan was neither pruned nor given away
        # moved aside, a fresh .tmp is made
        as_uid_1000("mv", str(vol / ".tmp"), str(vol / "aside"))
        run = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp", "--prune", "1d")
        assert run.code == 0, run.err
        assert os.stat(vol / ".tmp").st_uid == 1000


def test_a_root_owned_dirs_entry_of_an_old_volume_is_still_pruned_and_given_away(tmp_path: Path) -> None:
    # the everyday case the refusal above must not break: all of an old volume is root's
    vol = tmp_path / "vol"
    make_files(vol / ".tmp", 1, 2, mtime=time.time() - 3 * DAY)
    run = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp", "--prune", "1d")
    assert run.code == 0, run.err
    assert "pruned 3 entries" in run.err
    assert os.stat(vol / ".tmp").st_uid == 1000


def test_files_created_and_deleted_during_the_walk_do_not_fail_it(tmp_path: Path) -> None:
    # A service (or a replica) keeps making and deleting temp files while the init walks:
    # entries listed and gone by their turn. Only a rename or a replacement may leave the
    # walk behind; deletions must not make it walk again, nor fail after three walks.
    vol = tmp_path / "vol"
    make_files(vol, 1, 6000)
    names = os.listdir(vol / "d0")  # the order the walk lists them in
    deleted: list[str] = []

    def churn(where: str, seen: int) -> None:
        # every 1024 entries: delete the next 50 entries still to come in the listing
        for name in names[seen:seen + 50]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(vol / "d0" / name)
                deleted.append(name)
        (vol / "d0" / f"new-{seen}").touch()

    rep = apply_in_one_process(vol, churn)
    assert deleted
    assert rep.skips.counts.get("removed during walk", 0) > 0
    assert rep.entries < 2 * 6000  # one walk, not three
    assert os.stat(vol).st_uid == 1000


def test_a_chgrp_of_the_root_costs_one_walk_and_the_next_start_is_quick_again(tmp_path: Path) -> None:
    # SECURITY.md: the volume's user can force a walk on every start by changing the root's
    # group (or mode); each walk changes only what differs and fixes the root again.
    vol = tmp_path / "vol"
    make_files(vol, 2, 5)
    assert volinit("apply", str(vol), "--owner", "1000:1000").code == 0
    os.chown(vol, 1000, 0)
    run = volinit("apply", str(vol), "--owner", "1000:1000")
    assert "root was 1000:0" in run.err and "changed 1;" in run.err
    assert "root already right, walk skipped" in volinit("apply", str(vol), "--owner", "1000:1000").err


def test_mount_points_that_keep_moving_are_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    fd = os.open(vol, os.O_RDONLY | os.O_DIRECTORY)
    own = mounts.mount_id(fd)
    table = f"{own} 0 8:1 / / rw - ext4 /dev/sda1 rw\n9999 {own} 8:1 /x {vol}/gone rw - ext4 /dev/sda1 rw\n"
    monkeypatch.setattr(mounts, "_read_table", lambda: table.encode())
    try:
        with pytest.raises(mounts.OperationError) as err:
            mounts.volume_mounts(fd, str(vol))
    finally:
        os.close(fd)
    assert "mount points kept moving during 5 lookups" in err.value.line()
    assert stat.S_ISDIR(os.stat(vol).st_mode)


def test_a_dir_moved_away_while_the_walk_is_deep_below_it_is_walked_again(tmp_path: Path) -> None:
    # Below 16 levels the walk closes a level's fd while it is further down and comes back
    # up through "..". A dir moved meanwhile out from under its parent leaves ".." pointing
    # elsewhere: the walk must notice (not carry on in the wrong dir), and walk again.
    vol = tmp_path / "vol"
    vol.mkdir()
    make_chain(vol, 40)
    deep = vol.joinpath(*["d"] * 30)
    for i in range(3000):
        (deep / f"f{i}").touch()
    moved: list[bool] = []

    def move_once(where: str, seen: int) -> None:
        if not moved:
            os.rename(vol.joinpath(*["d"] * 25), vol / "moved")
            moved.append(True)

    rep = apply_in_one_process(vol, move_once)
    assert moved and rep.skips.counts.get("changed during walk", 0) >= 1
    assert {o[:2] for o in owners(vol).values()} == {(1000, 1000)}
    assert os.stat(vol / "moved" / "d" / "d" / "d" / "d" / "d" / "f0").st_uid == 1000


def test_a_root_dir_renamed_onto_a_dirs_entry_is_refused_by_owner(public_dir: Path) -> None:
    vol = Path(public_dir) / f"adopt-{os.getpid()}"
    make_files(vol / "root-only", 1, 2, mtime=time.time() - 3 * DAY)  # root's, beside .tmp
    os.chown(vol, 1000, 1000)
    as_uid_1000("mv", str(vol / "root-only"), str(vol / ".tmp"))
    before = owners(vol)
    run = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp", "--prune", "1d")
    assert run.code == 1
    assert run.errors == [f"volinit: error: will not adopt {vol}/.tmp: it is owned by 0:0, neither by 1000 "
                          "nor by the owner of the dir it is in, so volinit did not make it "
                          "(move it aside; volinit then makes a fresh one)"]
    assert owners(vol) == before
    # the fd prune would use is checked itself, not a name checked earlier (no window between)
    fd = os.open(vol, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(walk.OperationError, match="will not adopt .tmp"):
            walk.open_existing_dir(fd, ".tmp", 1000, mounts.volume_mounts(fd, str(vol)))
    finally:
        os.close(fd)


def test_lost_found_renamed_onto_a_dirs_entry_of_an_all_root_volume_is_refused(public_dir: Path) -> None:
    # an old volume, all root's, whose root any uid can write: the owner rule alone would adopt it
    with ext4(Path(public_dir) / f"ext4-allroot-{os.getpid()}") as vol:
        orphan(vol)
        os.chmod(vol, 0o777)
        as_uid_1000("mv", str(vol / "lost+found"), str(vol / "cache"))
        run = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", "cache", "--prune", "1h")
        assert run.code == 1 and "it is the filesystem's lost+found (inode 11), renamed" in run.err
        st = os.stat(vol / "cache" / "#1234")
        assert (st.st_uid, st.st_gid) == (0, 0)


def test_a_dir_swapped_in_for_the_one_volinit_just_made_is_refused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    vol = tmp_path / "vol"
    make_files(vol / "db", 1, 1)
    os.chmod(vol / "db", 0o700)
    real_mkdir = os.mkdir

    def mkdir_then_swap(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, mode, dir_fd=dir_fd)
        if name == "cache":  # the volume's user wins the race: db takes the new dir's name
            os.rename("cache", "gone", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.rename("db", "cache", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    monkeypatch.setattr(walk.os, "mkdir", mkdir_then_swap)
    fd = os.open(vol, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(walk.OperationError, match="will not adopt cache: it was replaced while volinit made it"):
            walk.ensure_dir(fd, "cache", 1000, 1000, None, set_owner=True, dry_run=False,
                            mounts=mounts.volume_mounts(fd, str(vol)))
    finally:
        os.close(fd)
    st = os.stat(vol / "cache")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)  # root's dir stayed root's


def test_a_volume_dir_renamed_before_the_mount_table_is_read_still_sees_its_mounts(public_dir: Path) -> None:
    # `volinit prune DIR` as root, DIR in a dir its user can write: the user renames DIR
    # after volinit opened it. Mounts are found by mount id, not by the path it was given.
    box = Path(public_dir) / f"renamed-{os.getpid()}"
    tmpdir, shared = box / "tmp", host_dir(box / "shared")
    tmpdir.mkdir(parents=True)
    try:
        with bind(shared, tmpdir / "m"):
            before = owners(shared)
            fd = os.open(tmpdir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.rename(tmpdir, box / "tmp2")
                found = mounts.volume_mounts(fd, str(tmpdir))
                assert found.is_mount_root(os.stat(shared))
                res = prune_dir(fd, 3600, mounts=found, workers=1)
                walk.chown_tree(fd, os.fstat(fd), 1000, 1000, workers=1, mounts=found)
            finally:
                os.close(fd)
                os.rename(box / "tmp2", tmpdir)
            assert res.skips.counts == {"another mount": 1}
            assert owners(shared) == before
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(box)], check=False)


def test_a_dir_replaced_by_another_dir_mid_walk_is_walked_again(tmp_path: Path) -> None:
    # The walk meets a name whose dir was replaced since the listing: the old dir (moved
    # aside, root's) must still be walked before the root is fixed.
    vol = tmp_path / "vol"
    for name in ("a1", "a2", "a3", "a4", "a5"):
        (vol / name).mkdir(parents=True)
    order = [n for n in os.listdir(vol)]  # the walk lists them in this order
    first, last = order[0], order[-1]
    for i in range(3000):
        (vol / first / f"f{i}").touch()
    (vol / last / "inside").touch()
    replaced: list[bool] = []

    def replace_once(where: str, seen: int) -> None:
        if not replaced:
            os.rename(vol / last, vol / "moved")
            (vol / last).mkdir()
            replaced.append(True)

    rep = apply_in_one_process(vol, replace_once)
    assert replaced and rep.skips.counts.get("changed during walk", 0) >= 1
    assert os.stat(vol / "moved" / "inside").st_uid == 1000
