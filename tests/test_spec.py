"""The spec loader: every rule of the contract, and a key path in every error."""

from __future__ import annotations

import os

import pytest

from volinit import spec
from volinit.errors import SpecError, UsageError

GOOD = """
version: 1
owner: "1000:1000"
volumes:
  /app/cache:
    owner: "1001"
    mode: "0750"
    chown: always
    hardlinks: chown
    dirs:
      .tmp:
        mode: "0700"
        prune: 1d12h
        keep: ["*.lock"]
      datalab: {}
  /app/models: {}
"""


def test_full_spec_loads_into_dataclasses() -> None:
    s = spec.loads(GOOD)
    cache, models = s.volumes
    assert cache.path == "/app/cache"
    assert (cache.owner.uid, cache.owner.gid) == (1001, 1001)  # GID defaults to UID
    assert cache.mode == 0o750 and cache.chown == "always" and cache.hardlinks == "chown"
    tmp, datalab = cache.dirs
    assert (tmp.path, tmp.mode, tmp.prune, tmp.keep) == (".tmp", 0o700, 36 * 3600, ("*.lock",))
    assert (datalab.mode, datalab.prune) == (None, None)
    assert models.owner == spec.Owner(1000, 1000)
    assert (models.chown, models.hardlinks, models.dirs) == ("on-root-mismatch", "skip", ())


@pytest.mark.parametrize("text,seconds", [("90m", 5400), ("24h", 86400), ("1d12h", 129600),
                                          ("1w", 604800), ("30s", 30), ("2h30m", 9000)])
def test_durations(text: str, seconds: int) -> None:
    assert spec.parse_duration(text, "k") == seconds


@pytest.mark.parametrize("path", ["/app/cache", "/data", "/var/tmp/x", "/home/app/.cache", "/srv/data/x",
                                  "/opt/app/cache", "/tmp/work", "/app//cache/"])
def test_volume_paths_accepted(path: str) -> None:
    assert spec.parse_volume_path(path, "k").startswith("/")


@pytest.mark.parametrize("path", ["/", "/etc", "/usr", "/usr/local/share", "/bin", "/lib", "/lib64",
                                  "/lib/x86_64-linux-gnu", "/proc/1", "/sys/fs", "/dev/shm", "/etc/ssl",
                                  "/boot/efi", "/sbin/x", "/var", "/home", "/tmp", "/root", "/run", "/opt",
                                  "/srv", "/var/lib/docker", "/var/lib/docker/volumes/x", "/usr/../etc"])
def test_system_paths_refused(path: str) -> None:
    with pytest.raises(SpecError) as err:
        spec.from_data({"version": 1, "owner": "1000", "volumes": {path: {}}})
    assert err.value.key == f"volumes.{path}"


# Each bad spec, the key path its error must name, and a word of the message.
BAD = [
    ("version: 1\nowner: '1000'\nvolumes: {/a: {bogus: 1}}", "volumes./a.bogus", "unknown key"),
    ("version: 1\nowner: '1000'\nvolumes: {/a: {}}\nextra: 1", "extra", "unknown key"),
    ("version: 1\nowner: 'app'\nvolumes: {/a: {}}", "owner", "bad owner"),
    ("version: 1\nowner: '1000:x'\nvolumes: {/a: {}}", "owner", "bad owner"),
    ("version: 1\nowner: '-1'\nvolumes: {/a: {}}", "owner", "bad owner"),
    ("version: 1\nowner: '99999999999'\nvolumes: {/a: {}}", "owner", "out of range"),
    ("version: 1\nvolumes: {/a: {}}", "volumes./a.owner", "no owner"),
    ("version: 1\nowner: '1'\nvolumes: {a/b: {}}", "volumes.a/b", "not absolute"),
    ("version: 1\nowner: '1'\nvolumes: {/a/../etc: {}}", "volumes./a/../etc", "'..'"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {../x: {}}}}", "volumes./a.dirs.../x", "leaves"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {x/../../y: {}}}}", "volumes./a.dirs.x/../../y", "leaves"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {/abs: {}}}}", "volumes./a.dirs./abs", "absolute"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {.: {}}}}", "volumes./a.dirs..", "volume itself"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {.tmp: {prune: 3x}}}}", "volumes./a.dirs..tmp.prune", "bad duration"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {.tmp: {prune: 24}}}}", "volumes./a.dirs..tmp.prune", "bad duration"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {.tmp: {prune: 0h}}}}", "volumes./a.dirs..tmp.prune", "zero"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {mode: 0750}}", "volumes./a.mode", "mode 0750 is a number"),
    ("version: 1\nowner: 0x3e8\nvolumes: {/a: {}}", "owner", "bad owner '0x3e8'"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {.tmp: {prune: 1:30}}}}", "volumes./a.dirs..tmp.prune",
     "bad duration '1:30'"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {mode: 750}}", "volumes./a.mode", "quote it"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {mode: '0999'}}", "volumes./a.mode", "bad mode"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {chown: sometimes}}", "volumes./a.chown", "unknown value"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {hardlinks: follow}}", "volumes./a.hardlinks", "unknown value"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {.tmp: {keep: '*/x'}}}}", "volumes./a.dirs..tmp.keep", "'/'"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: [.tmp]}}", "volumes./a.dirs", "mapping"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: []}}", "volumes./a.dirs", "mapping"),  # not "no dirs"
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: ''}}", "volumes./a.dirs", "mapping"),
    ("version: 2\nowner: '1'\nvolumes: {/a: {}}", "version", "unsupported"),
    ("owner: '1'\nvolumes: {/a: {}}", "version", "missing"),
    ("version: 1\nowner: '1'\nvolumes: {}", "volumes", "no volumes"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {}, /a/: {}}", "volumes./a/", "twice"),
    ("- just\n- a list", "", "mapping"),
    ("version: 1\nowner: '1'\nvolumes:\n  /a: {dirs: {.tmp: {mode: '0700'}\n", "line", "bad YAML"),
    ("version: [1", "line 2 column 1", "bad YAML"),
    ("version: 1\nowner: '1000'\nowner: '2000'\nvolumes: {/a: {}}", "line 3 column 1", "duplicate key 'owner'"),
    ("version: 1\nowner: '1'\nvolumes: {/a: {dirs: {x/" + "b" * 256 + ": {}}}}", "volumes./a.dirs.x/b",
     "longer than 255 bytes"),
    ("version: 1\nowner: '1'\nvolumes:\n  /a: {chown: always}\n  /a: {}", "line 5 column 3", "duplicate key '/a'"),
    # The column is the library's: PyYAML 6.0.4's own depth limit stops the parse at another
    # column, with its own words, before the project's check; both must say "line 2" and "nest".
    ("version: 1\nvolumes: " + "[" * 50000 + "]" * 50000, "spec line 2 column ", "nest"),
]


# Unquoted, YAML 1.1 reads 33:33 as base 60 (2013) and 01000 as octal (512): the owner is
# what was written, never what YAML made of it.
@pytest.mark.parametrize("written,uid,gid", [("33:33", 33, 33), ("1:1", 1, 1), ("1000:50", 1000, 50),
                                             ("1000", 1000, 1000), ("01000", 1000, 1000), ("0", 0, 0)])
def test_unquoted_owners_mean_what_was_written(written: str, uid: int, gid: int) -> None:
    loaded = spec.loads(f"version: 1\nowner: {written}\nvolumes:\n  /a:\n    owner: {written}\n  /b: {{}}")
    assert [(v.owner.uid, v.owner.gid) for v in loaded.volumes] == [(uid, gid), (uid, gid)]


@pytest.mark.parametrize("text,key,word", BAD)
def test_bad_specs_name_their_key(text: str, key: str, word: str) -> None:
    with pytest.raises(SpecError) as err:
        spec.loads(text)
    assert key in err.value.line()
    assert word in err.value.line()
    assert "\n" not in err.value.line()
    assert err.value.exit_code == 2


def test_flags_build_the_same_spec() -> None:
    s = spec.from_flags(["/data", "/app/cache"], "1000:100", "0750", "always", [".tmp", "./.tmp", "x/y"], "24h")
    assert [v.path for v in s.volumes] == ["/data", "/app/cache"]
    vol = s.volumes[0]
    assert vol.owner == spec.Owner(1000, 100) and vol.mode == 0o750 and vol.chown == "always"
    assert [(d.path, d.prune) for d in vol.dirs] == [(".tmp", 86400), ("x/y", 86400)]


@pytest.mark.parametrize("args,flag", [
    ((["/data"], None, None, "on-root-mismatch", [], None), "--owner"),
    ((["/data"], "x", None, "on-root-mismatch", [], None), "--owner"),
    ((["/data"], "1", "999", "on-root-mismatch", [], None), "--mode"),
    ((["/data"], "1", None, "maybe", [], None), "--chown"),
    ((["/data"], "1", None, "on-root-mismatch", ["../x"], None), "--dir"),
    ((["/data"], "1", None, "on-root-mismatch", [".tmp"], "soon"), "--prune"),
    ((["/data"], "1", None, "on-root-mismatch", [], "24h"), "--prune"),
    ((["/"], "1", None, "on-root-mismatch", [], None), "PATH /"),
    ((["relative"], "1", None, "on-root-mismatch", [], None), "PATH relative"),
])
def test_bad_flags_name_the_flag(args: tuple, flag: str) -> None:
    with pytest.raises(UsageError) as err:
        spec.from_flags(*args)
    assert err.value.line().startswith(flag) and "spec" not in err.value.line(), err.value.line()
    assert err.value.exit_code == 2


def test_spec_file_missing_and_not_utf8(tmp_path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        spec.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\nowner: '\xe9'\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        spec.load(str(bad))


def test_merge_keys_may_be_overridden() -> None:
    loaded = spec.loads("version: 1\nowner: '1'\nvolumes:\n  /a: &v {chown: always, hardlinks: chown}\n"
                        "  /b:\n    <<: *v\n    chown: never\n")
    assert [(v.chown, v.hardlinks) for v in loaded.volumes] == [("always", "chown"), ("never", "chown")]


def test_spec_files_that_are_not_a_spec_are_refused_without_hanging(tmp_path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # no writer: a plain open would block forever
    with pytest.raises(SpecError, match="not a regular file"):
        spec.load(str(fifo))
    with pytest.raises(SpecError, match="not a regular file"):
        spec.load("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (spec.MAX_SPEC_BYTES + 1))
    with pytest.raises(SpecError, match="larger than 1024 KiB"):
        spec.load(str(big))
    with pytest.raises(UsageError, match="^-f: empty path"):
        spec.load("")
