"""`volinit apply` on real files: ownership on disk, what was created, what was pruned."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import age, ctimes, make_chain, owners, remove_chain, volinit

pytestmark = pytest.mark.usefixtures("as_root")

U = (1000, 1000)


@pytest.fixture
def old_volume(tmp_path: Path) -> tuple[Path, Path]:
    """A root-owned volume as an old root container left it, with links pointing outside."""
    vol, outside = tmp_path / "vol", tmp_path / "outside"
    (vol / "models" / "deep").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("root's")
    (outside / "dir").mkdir()
    (vol / "models" / "weights.bin").write_bytes(b"\0" * 1024)
    (vol / "models" / "deep" / "x").write_text("x")
    (vol / "models" / "to-secret").symlink_to(outside / "secret")
    (vol / "to-dir").symlink_to(outside / "dir")
    (vol / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(vol / "fifo")
    return vol, outside


def test_old_root_owned_tree_becomes_the_users_and_nothing_outside_changes(old_volume) -> None:
    vol, outside = old_volume
    before_outside = owners(outside)
    res = volinit("apply", str(vol), "--owner", "1000:1000", "--dir", ".tmp")
    assert res.code == 0, res.err
    assert set(owners(vol).values()) == {U}
    assert owners(outside) == before_outside == {".": (0, 0), "secret": (0, 0), "dir": (0, 0)}
    # the links themselves changed, and still point where they did
    assert os.readlink(vol / "to-dir") == str(outside / "dir")
    assert f"{vol}: owner 1000:1000" in res.err and "created .tmp" in res.err


def test_tmp_dir_gets_its_mode_and_owner(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    spec = tmp_path / "volinit.yaml"
    spec.write_text(f"""version: 1
owner: "1000:2000"
volumes:
  {vol}:
    mode: "0750"
    dirs:
      .tmp: {{mode: "0700"}}
      cache/models: {{mode: "2770"}}
""")
    res = volinit("apply", "-f", str(spec))
    assert res.code == 0, res.err
    for rel, mode in ((".tmp", 0o700), ("cache/models", 0o2770), ("cache", 0o755)):
        st = os.stat(vol / rel)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, mode), rel
    st = os.stat(vol)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o750)


def test_prune_removes_old_entries_and_keeps_fresh_ones_and_keep_matches(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    tmp = vol / ".tmp"
    (tmp / "old-dir" / "inner").mkdir(parents=True)
    (tmp / "old-dir" / "inner" / "f").write_text("x")
    (tmp / "old-file").write_text("x" * 100)
    (tmp / "fresh").write_text("x")
    (tmp / "old.lock").write_text("held")
    (tmp / "old-dir-with-fresh").mkdir()
    (tmp / "old-dir-with-fresh" / "new").write_text("x")
    for p in ("old-dir/inner/f", "old-dir/inner", "old-dir", "old-file", "old.lock", "old-dir-with-fresh"):
        age(tmp / p, 3)
    spec = tmp_path / "s.yaml"
    spec.write_text(f'version: 1\nowner: "1000"\nvolumes:\n  {vol}:\n    dirs:\n      .tmp: {{prune: 1d, keep: ["*.lock"]}}\n')
    res = volinit("apply", "-f", str(spec), "--json")
    assert res.code == 0, res.err
    left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    assert left == ["fresh", "old-dir-with-fresh", "old-dir-with-fresh/new", "old.lock"]
    doc = json.loads(res.out)
    assert doc["volumes"][0]["pruned"]["entries"] == 4  # f, inner, old-dir, old-file
    assert tmp.is_dir()  # never the dir itself


def test_second_run_changes_no_inode(old_volume) -> None:
    vol, _ = old_volume
    assert volinit("apply", str(vol), "--owner", "1000", "--dir", ".tmp", "--mode", "0750").code == 0
    before = ctimes(vol)
    for policy in ("on-root-mismatch", "always"):
        res = volinit("apply", str(vol), "--owner", "1000", "--dir", ".tmp", "--mode", "0750", "--chown", policy, "--json")
        assert res.code == 0, res.err
        assert ctimes(vol) == before, policy
        assert json.loads(res.out)["volumes"][0]["changed"] == 0
    assert "root already right, walk skipped" in volinit("apply", str(vol), "--owner", "1000").err


def test_two_volumes_with_per_dir_modes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "old").write_text("x")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"""version: 1
owner: "1000"
volumes:
  {a}:
    dirs: {{.tmp: {{mode: "0700"}}, hf: {{mode: "0755"}}}}
  {b}:
    owner: "2000:3000"
    dirs: {{x: {{mode: "1777"}}}}
""")
    res = volinit("apply", "-f", str(spec))
    assert res.code == 0, res.err
    assert stat.S_IMODE(os.stat(a / ".tmp").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(a / "hf").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(b / "x").st_mode) == 0o1777
    assert set(owners(a).values()) == {U}
    assert set(owners(b).values()) == {(2000, 3000)}


def test_spec_from_env_var(tmp_path: Path) -> None:
    vol = tmp_path / "v"
    vol.mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text(f'version: 1\nowner: "1000"\nvolumes: {{{vol}: {{}}}}\n')
    assert volinit("apply", env={"VOLINIT_SPEC": str(spec)}).code == 0
    assert os.stat(vol).st_uid == 1000


def test_dry_run_changes_nothing_and_says_what_would(old_volume) -> None:
    vol, _ = old_volume
    tmp = vol / ".tmp"
    tmp.mkdir()
    (tmp / "old").write_text("x")
    age(tmp / "old", 3)
    before, before_owners = ctimes(vol), owners(vol)
    res = volinit("apply", str(vol), "--owner", "1000", "--dir", ".tmp", "--dir", "new", "--prune", "1d",
                  "--dry-run", "--json")
    assert res.code == 0, res.err
    assert ctimes(vol) == before and owners(vol) == before_owners
    assert not (vol / "new").exists() and (tmp / "old").exists()
    doc = json.loads(res.out)
    v = doc["volumes"][0]
    assert doc["dry_run"] and v["created"] == ["new"] and v["pruned"]["entries"] == 1
    # every entry and the root; a dry walk still sees the file the prune would remove
    assert v["changed"] == len(before)
    assert "would create new" in res.err


def test_device_nodes_hard_links_and_other_filesystems_are_skipped_and_reported(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    (vol / "mnt").mkdir(parents=True)
    os.mknod(vol / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    (vol / "a").write_text("x")
    os.link(vol / "a", vol / "b")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(vol / "mnt")]).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (vol / "mnt" / "inner").write_text("x")
        res = volinit("apply", str(vol), "--owner", "1000", "--json")
        assert res.code == 0, res.err
        assert os.lstat(vol / "null").st_uid == 0
        assert os.lstat(vol / "a").st_uid == 0 and os.lstat(vol / "b").st_uid == 0
        assert os.lstat(vol / "mnt").st_uid == 0 and os.lstat(vol / "mnt" / "inner").st_uid == 0
        reasons = json.loads(res.out)["volumes"][0]["skipped"]["by_reason"]
        assert reasons == {"device node": 1, "hard link": 2, "another mount": 1}
        assert "skipped 4" in res.err
        # hardlinks: chown changes the shared inode once asked to
        spec = tmp_path / "s.yaml"
        spec.write_text(f'version: 1\nowner: "1000"\nvolumes:\n  {vol}: {{chown: always, hardlinks: chown}}\n')
        assert volinit("apply", "-f", str(spec)).code == 0
        assert os.lstat(vol / "a").st_uid == 1000 and os.lstat(vol / "null").st_uid == 0
    finally:
        subprocess.run(["umount", str(vol / "mnt")])


def test_never_policy_leaves_existing_owners_but_creates_dirs_for_the_owner(old_volume) -> None:
    vol, _ = old_volume
    before = owners(vol)
    res = volinit("apply", str(vol), "--owner", "1000", "--chown", "never", "--dir", ".tmp")
    assert res.code == 0, res.err
    after = owners(vol)
    assert after.pop(".tmp") == U
    assert after == before


def test_deep_tree_and_hostile_names(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    # 3000 levels: more than Python's recursion limit and more than one path can name
    make_chain(vol, 3000)
    names = [b"new\nline", b"bad-\xff\xfe-utf8", b"x" * 255, b" leading space", b"-dash"]
    for n in names:
        with open(os.path.join(os.fsencode(vol), n), "wb") as fh:
            fh.write(b"x")
    try:
        _apply_deep(vol, names)
    finally:
        remove_chain(vol)


def _apply_deep(vol: Path, names: list[bytes]) -> None:
    res = volinit("apply", str(vol), "--owner", "1000", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["volumes"][0]["entries"] == 3000 + len(names)
    for n in names:
        assert os.lstat(os.path.join(os.fsencode(vol), n)).st_uid == 1000
    fd = os.open(vol, os.O_RDONLY)
    for _ in range(3000):
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    assert os.fstat(fd).st_uid == 1000
    os.close(fd)


def test_symlinked_dir_in_spec_is_refused_not_followed(tmp_path: Path) -> None:
    vol, outside = tmp_path / "vol", tmp_path / "outside"
    vol.mkdir()
    outside.mkdir()
    (vol / ".tmp").symlink_to(outside)
    res = volinit("apply", str(vol), "--owner", "1000", "--dir", ".tmp/sub")
    assert res.code == 1
    assert f"volinit: error: cannot create {vol}/.tmp: is a symlink (move it out of the way" in res.err
    assert list(outside.iterdir()) == [] and os.stat(outside).st_uid == 0


@pytest.mark.parametrize("blocker", ["file", "symlink"])
def test_a_dir_that_cannot_be_made_fails_the_volume_before_anything_changes(tmp_path: Path, blocker: str) -> None:
    vol = tmp_path / "vol"
    (vol / "cache").mkdir(parents=True)
    (vol / "cache" / "old").write_text("x")
    age(vol / "cache" / "old", days=3)
    if blocker == "file":
        (vol / "tmp").write_text("in the way")
    else:
        (vol / "tmp").symlink_to(tmp_path)
    before = owners(vol)
    res = volinit("apply", str(vol), "--owner", "1000", "--dir", "cache", "--dir", "tmp/sub", "--prune", "1d")
    assert res.code == 1
    assert res.errors[0].startswith(f"volinit: error: cannot create {vol}/tmp: ")
    assert owners(vol) == before  # no walk happened
    assert (vol / "cache" / "old").exists()  # no prune happened


def test_volume_path_through_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    res = volinit("apply", str(tmp_path / "link"), "--owner", "1000")
    assert res.code == 1 and "is a symlink" in res.err
    assert os.stat(real).st_uid == 0


def test_missing_volume_exits_1_and_other_volumes_still_apply(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    res = volinit("apply", str(tmp_path / "missing"), str(good), "--owner", "1000")
    assert res.code == 1
    assert f"volinit: error: cannot open volume {tmp_path}/missing: No such file or directory (mount the volume" in res.err
    assert os.stat(good).st_uid == 1000


def test_read_only_volume_exits_1_naming_the_fix(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("x")
    if subprocess.run(["mount", "--bind", "-o", "ro", str(vol), str(vol)]).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        res = volinit("apply", str(vol), "--owner", "1000")
        assert res.code == 1
        assert "Read-only file system" in res.err and "mount it read-write" in res.err
        assert res.err.count("\n") == 1
    finally:
        subprocess.run(["umount", str(vol)])
    assert volinit("apply", str(vol), "--owner", "1000").code == 0
    assert os.stat(vol / "f").st_uid == 1000


def test_without_chown_capability_exits_1_naming_it(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("x")
    # root without CAP_CHOWN: what `cap_drop: [ALL]` without `cap_add: [CHOWN]` gives
    res = volinit("apply", str(vol), "--owner", "2000", prefix=["setpriv", "--bounding-set", "-chown"])
    assert res.code == 1
    assert "Operation not permitted" in res.err and "CAP_CHOWN" in res.err
    assert os.stat(vol).st_uid == 0  # the root was not fixed, so a rerun walks again


def test_bad_spec_touches_nothing_even_in_volumes_before_the_error(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text(f'version: 1\nowner: "1000"\nvolumes:\n  {vol}:\n    dirs: {{.tmp: {{}}}}\n  /etc: {{}}\n')
    res = volinit("apply", "-f", str(spec))
    assert res.code == 2
    assert res.err.strip() == ("volinit: error: spec at volumes./etc: refusing system path /etc (volinit changes "
                               "owners recursively; point it at a mounted volume such as /app/cache or /data)")
    assert os.stat(vol).st_uid == 0 and not (vol / ".tmp").exists()
