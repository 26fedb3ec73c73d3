"""The five rules on hand-made workloads: what each flags, what it leaves alone, and why.

No Docker here: the rules read only the neutral model, so a table of workloads is their spec.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from volinit.host.rules import DEFAULT_MIN_TEMP, static_findings
from volinit.host.workload import (
    BIND,
    CONFIG,
    TMPFS,
    VOLUME,
    Mount,
    PathInfo,
    User,
    Workload,
)

IMAGE = (PathInfo("/", 0, 0, 0o755), PathInfo("/tmp", 0, 0, 0o1777), PathInfo("/var/tmp", 0, 0, 0o1777),
         PathInfo("/usr", 0, 0, 0o755), PathInfo("/app", 0, 0, 0o755), PathInfo("/home", 0, 0, 0o755),
         PathInfo("/home/app", 1000, 1000, 0o755))


def wl(**kw) -> Workload:
    base = dict(name="svc", image="img", user=User(1000, 1000, "compose user:"), image_present=True,
                image_paths=IMAGE, working_dir="/app", home="/home/app", home_source="passwd")
    base.update(kw)
    return Workload(**base)


def ids(w: Workload, **kw) -> list[tuple[str, str]]:
    return [(f.id, f.path) for f in static_findings([w], min_temp=kw.pop("min_temp", DEFAULT_MIN_TEMP), **kw)]


def env(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


# --- no-temp-dir -------------------------------------------------------------------------

def test_read_only_without_tmp_is_flagged_for_root_too() -> None:
    assert ids(wl(read_only_root=True)) == [("no-temp-dir", "/tmp")]
    assert ids(wl(read_only_root=True, user=User(0, 0))) == [("no-temp-dir", "/tmp")]


@pytest.mark.parametrize("mounts, environ", [
    ((Mount("/tmp", TMPFS),), ()),
    ((Mount("/var/tmp", TMPFS),), ()),
    ((Mount("/data", VOLUME, "d"),), env(TMPDIR="/data/tmp")),
    ((Mount("/app", VOLUME, "d"),), ()),  # tempfile falls back to the working dir
])
def test_read_only_with_a_writable_temp_candidate_is_clean(mounts, environ) -> None:
    assert [i for i in ids(wl(read_only_root=True, mounts=mounts, env=environ)) if i[0] == "no-temp-dir"] == []


@pytest.mark.parametrize("mounts, environ", [
    ((Mount("/tmp/sub", TMPFS),), ()),  # a mount below /tmp does not make /tmp writable
    ((Mount("/data", VOLUME, "d", read_only=True),), env(TMPDIR="/data/tmp")),
    ((Mount("/tmp", TMPFS, mode=0o755),), ()),  # root's tmpfs, uid 1000 cannot create there
    ((), env(TMPDIR="/opt/tmp")),  # TMPDIR on the read-only root
])
def test_read_only_with_no_usable_candidate_is_flagged(mounts, environ) -> None:
    assert [i for i, _ in ids(wl(read_only_root=True, mounts=mounts, env=environ)) if i != "volume-not-owned"] == [
        "no-temp-dir"]


def test_writable_root_is_not_no_temp_dir() -> None:
    assert ids(wl()) == []


# --- cache-unwritable --------------------------------------------------------------------

def test_cache_var_on_read_only_root_is_flagged() -> None:
    w = wl(read_only_root=True, mounts=(Mount("/tmp", TMPFS),),
           env=env(XDG_CACHE_HOME="/usr/lib/python3/dist-packages/reportgen"))
    found = static_findings([w], min_temp=DEFAULT_MIN_TEMP)
    assert [(f.id, f.path) for f in found] == [("cache-unwritable", "/usr/lib/python3/dist-packages/reportgen")]
    assert "read-only root" in found[0].message and "XDG_CACHE_HOME" in found[0].fix


def test_cache_var_in_a_root_owned_dir_is_flagged_without_read_only() -> None:
    w = wl(env=env(HF_HOME="/usr/share/models"))
    found = static_findings([w], min_temp=DEFAULT_MIN_TEMP)
    assert [(f.id, f.path) for f in found] == [("cache-unwritable", "/usr/share/models")]
    assert "parent /usr is 0:0 mode 0755" in found[0].message


def test_cache_var_on_a_volume_or_own_dir_is_clean() -> None:
    assert ids(wl(mounts=(Mount("/cache", VOLUME, "c"),), env=env(HF_HOME="/cache/hf"), user=User(0, 0))) == []
    assert ids(wl(env=env(XDG_CACHE_HOME="/home/app/.cache"))) == []
    assert ids(wl(env=env(VOLINIT_DIRS="/home/app/a:/home/app/b"))) == []


def test_volinit_dirs_entries_are_checked() -> None:
    assert ids(wl(env=env(VOLINIT_DIRS="/home/app/a /usr/x"))) == [("cache-unwritable", "/usr/x")]


def test_home_that_does_not_exist_and_cannot_be_made_is_flagged() -> None:
    # adduser --system without --home: HOME=/nonexistent, and / is root's
    w = wl(home="/nonexistent")
    assert ids(w) == [("cache-unwritable", "/nonexistent/.cache")]
    # XDG_CACHE_HOME set elsewhere: HOME no longer matters for caches
    assert ids(replace(w, env=env(XDG_CACHE_HOME="/home/app/.cache"))) == []


def test_docker_default_home_is_not_flagged() -> None:
    # a uid with no passwd entry gets HOME=/: no evidence a library writes there
    assert ids(wl(home="/", home_source="default", read_only_root=True, mounts=(Mount("/tmp", TMPFS),))) == []


def test_home_set_in_the_environment_on_a_read_only_root_is_flagged() -> None:
    w = wl(home="/home/app", home_source="environment", read_only_root=True, mounts=(Mount("/tmp", TMPFS),))
    assert ids(w) == [("cache-unwritable", "/home/app/.cache")]


def test_cache_on_a_config_mount_is_flagged() -> None:
    w = wl(mounts=(Mount("/etc/app", CONFIG, "c", True),), env=env(XDG_CACHE_HOME="/etc/app"))
    assert ids(w) == [("cache-unwritable", "/etc/app")]


# --- temp-too-small ----------------------------------------------------------------------

SMALL_TMP = (Mount("/tmp", TMPFS, size=512 << 20),
             Mount("/app/cache", VOLUME, "c", exists=False, image_dir=True, image_owner=(1000, 1000), image_mode=0o755))


def test_small_tmpfs_with_a_download_cache_is_flagged() -> None:
    w = wl(read_only_root=True, mounts=SMALL_TMP, env=env(HF_HOME="/app/cache"))
    found = static_findings([w], min_temp=DEFAULT_MIN_TEMP)
    assert [(f.id, f.path) for f in found] == [("temp-too-small", "/tmp")]
    assert "512M" in found[0].message and "1G" in found[0].message and "TMPDIR" in found[0].fix


def test_tmpdir_on_a_volume_fixes_temp_too_small() -> None:
    w = wl(read_only_root=True, mounts=SMALL_TMP, env=env(HF_HOME="/app/cache", TMPDIR="/app/cache/.tmp"))
    assert ids(w) == []


def test_small_tmpfs_without_download_signals_is_left_alone_unless_min_temp_given() -> None:
    w = wl(read_only_root=True, mounts=(Mount("/tmp", TMPFS, size=64 << 20),))
    assert ids(w) == []  # a database's 64M /tmp is right for it
    assert ids(w, min_temp_for_all=True) == [("temp-too-small", "/tmp")]
    assert ids(w, min_temp=32 << 20, min_temp_for_all=True) == []


def test_unsized_tmpfs_is_not_temp_too_small() -> None:
    assert ids(wl(mounts=(Mount("/tmp", TMPFS),), env=env(HF_HOME="/home/app/hf"))) == []


# --- volume-not-owned --------------------------------------------------------------------

def vol(**kw) -> Mount:
    base = dict(target="/data", kind=VOLUME, source="p_data", exists=False, image_dir=True,
                image_owner=(1000, 1000), image_mode=0o755)
    base.update(kw)
    return Mount(**base)


def test_mount_point_missing_from_the_image_is_flagged() -> None:
    found = static_findings([wl(mounts=(vol(image_dir=False, image_owner=None),))], min_temp=DEFAULT_MIN_TEMP)
    assert [(f.id, f.path) for f in found] == [("volume-not-owned", "/data")]
    assert "0:0" in found[0].message and "volinit repair p_data --owner 1000:1000" in found[0].fix


def test_fresh_volume_seeded_by_the_image_is_clean_but_an_old_one_is_not() -> None:
    assert ids(wl(mounts=(vol(),))) == []
    found = static_findings([wl(mounts=(vol(exists=True),))], min_temp=DEFAULT_MIN_TEMP)
    assert [f.id for f in found] == ["volume-not-owned"]
    assert "already exists" in found[0].message
    # no engine to ask: it may exist
    assert "if it already exists" in static_findings([wl(mounts=(vol(exists=None),))],
                                                                min_temp=DEFAULT_MIN_TEMP)[0].message


def test_image_dir_owned_by_someone_else_is_flagged() -> None:
    assert ids(wl(mounts=(vol(image_owner=(0, 0)),))) == [("volume-not-owned", "/data")]
    assert ids(wl(mounts=(vol(no_copy=True),))) == [("volume-not-owned", "/data")]


def test_gated_root_read_only_or_unknown_uid_is_clean() -> None:
    bad = vol(image_dir=False, image_owner=None)
    assert ids(wl(mounts=(bad,), gated=True, gate="volinit", gated_volumes=("p_data",))) == []
    assert ids(wl(mounts=(bad,), user=User(0, 0))) == []
    assert ids(wl(mounts=(replace(bad, read_only=True),))) == []
    assert ids(wl(mounts=(bad,), user=User(None, unknown_why="image absent"))) == []
    assert ids(wl(mounts=(bad,), init=True)) == []


def test_an_init_that_does_not_mount_the_volume_does_not_gate_it() -> None:
    bad = vol(image_dir=False, image_owner=None)
    assert ids(wl(mounts=(bad,), gated=True, gate="data-init", gated_volumes=("p_other",))) == [
        ("volume-not-owned", "/data")]


def test_bind_mounts_are_not_volume_not_owned() -> None:
    assert ids(wl(mounts=(Mount("/data", BIND, "/srv/data"),))) == []


# --- state-not-persistent ----------------------------------------------------------------

def test_persist_path_on_tmpfs_or_layer_is_flagged() -> None:
    w = wl(mounts=(Mount("/tmp", TMPFS),), persist=("/tmp/episodes", "/app/state"))
    found = static_findings([w], min_temp=DEFAULT_MIN_TEMP)
    assert [(f.id, f.path) for f in found] == [("state-not-persistent", "/tmp/episodes"),
                                               ("state-not-persistent", "/app/state")]
    assert "tmpfs /tmp" in found[0].message and "own layer" in found[1].message


def test_persist_path_on_a_volume_is_clean() -> None:
    assert ids(wl(mounts=(Mount("/app/state", VOLUME, "s", image_dir=True, image_owner=(1000, 1000),
                                image_mode=0o755, exists=False),), persist=("/app/state/x",))) == []


def test_image_volume_covered_by_tmpfs_is_flagged() -> None:
    w = wl(image_volumes=("/var/lib/app",), mounts=(Mount("/var/lib/app", TMPFS),))
    assert ids(w) == [("state-not-persistent", "/var/lib/app")]
    assert ids(replace(w, mounts=())) == []  # an anonymous volume: not this rule's case


def test_every_finding_has_one_line_message_and_fix() -> None:
    w = wl(read_only_root=True, env=env(HF_HOME="/usr/x"), persist=("/srv",),
           mounts=(vol(image_dir=False, image_owner=None),))
    for f in static_findings([w], min_temp=DEFAULT_MIN_TEMP):
        assert f.message and f.fix and "\n" not in f.message + f.fix
        assert f.source == "static"
