"""The command line as a user meets it: help, version, usage errors, `volinit prune`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import age, volinit

from volinit import __version__
from volinit.cli import app

COMMANDS = sorted(c.name for c in app.registered_commands)  # type: ignore[misc]


def test_every_command_is_documented_with_an_example() -> None:
    assert {"apply", "check", "doctor", "fix", "prune", "repair", "schema"} <= set(COMMANDS)
    for name in COMMANDS:
        res = volinit(name, "--help")
        assert res.code == 0, res.err
        assert "Example" in res.out, name
        assert f"volinit {name}" in res.out.split("Example", 1)[1], name


def test_top_level_help_lists_exit_codes_and_env() -> None:
    res = volinit("--help")
    assert res.code == 0
    for word in ("130 interrupted", "2 usage, spec, compose or manifest error", "VOLINIT_SPEC", "VOLINIT_IMAGE", "VOLINIT_WORKERS",
                 *COMMANDS):
        assert word in res.out


def test_version() -> None:
    res = volinit("--version")
    assert (res.code, res.out.strip()) == (0, f"volinit {__version__}")


@pytest.mark.parametrize("args,word", [
    (["apply", "--bogus"], "No such option"),
    (["apply", "/data", "-f", "x.yaml", "--owner", "1"], "cannot be combined"),
    (["apply", "--owner", "1000"], "only applies to PATH arguments"),
    (["apply", "/data"], "--owner"),
    (["apply", "/", "--owner", "1000"], "refusing system path /"),
    (["prune", "/x"], "--older-than"),
    (["prune", "/etc/ssl", "--older-than", "1d"], "refusing to prune system path /etc/ssl"),
    (["prune", "/", "--older-than", "1d"], "refusing to prune system path /"),
    (["prune", "/data", "--older-than", "yesterday"], "bad duration"),
    (["doctor", "--min-free", "lots"], "--min-free"),
    (["repair", "v1", "--owner", "root"], "bad owner"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], word: str) -> None:
    res = volinit(*args)
    assert res.code == 2, res
    assert word in res.err
    assert "Traceback" not in res.err


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("workers", ["abc", "0", "-2", "1.5", "²"])
def test_a_bad_volinit_workers_is_a_usage_error_and_touches_nothing(tmp_path: Path, workers: str) -> None:
    vol = tmp_path / "vol"
    (vol / ".tmp").mkdir(parents=True)
    (vol / ".tmp" / "old").touch()
    age(vol / ".tmp" / "old", days=3)
    for args in (["apply", str(vol), "--owner", "1000", "--dir", ".tmp", "--prune", "1d"],
                 ["prune", str(vol / ".tmp"), "--older-than", "1d"]):
        res = volinit(*args, env={"VOLINIT_WORKERS": workers})
        assert res.code == 2
        assert res.errors == [f"volinit: error: VOLINIT_WORKERS: {workers!r} is not a positive whole number "
                              "(set it to the number of walking processes, e.g. 2, or unset it for one per CPU)"]
        assert (vol / ".tmp" / "old").exists()
        assert os.stat(vol).st_uid == 0


def test_missing_default_spec_says_how_to_provide_one(tmp_path: Path) -> None:
    res = volinit("apply", env={"VOLINIT_SPEC": str(tmp_path / "absent.yaml")})
    assert res.code == 2
    assert res.err.startswith("volinit: error: spec at ") and "-f SPEC, or set VOLINIT_SPEC" in res.err


@pytest.mark.usefixtures("as_root")
def test_prune_command(tmp_path: Path) -> None:
    d = tmp_path / "tmp"
    (d / "job-1").mkdir(parents=True)
    (d / "job-1" / "part").write_bytes(b"x" * 4096)
    (d / "fresh").write_text("x")
    (d / "keep.lock").write_text("x")
    (d / "outside-link").symlink_to(tmp_path)
    for p in ("job-1/part", "job-1", "keep.lock", "outside-link"):
        age(d / p, 2)
    dry = volinit("prune", str(d), "--older-than", "1d", "--keep", "*.lock", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert json.loads(dry.out)["removed"] == 3 and (d / "job-1" / "part").exists()
    res = volinit("prune", str(d), "--older-than", "1d", "--keep", "*.lock", "--json")
    assert res.code == 0, res.err
    assert sorted(os.listdir(d)) == ["fresh", "keep.lock"]
    doc = json.loads(res.out)
    assert (doc["removed"], doc["kept"]) == (3, 1) and doc["bytes"] >= 4096
    assert tmp_path.is_dir()  # the link went, not its target
    assert "removed 3 entries" in res.err


def test_prune_of_missing_dir_exits_1(tmp_path: Path) -> None:
    res = volinit("prune", str(tmp_path / "gone"), "--older-than", "1d")
    assert res.code == 1 and "No such file or directory" in res.err


@pytest.mark.usefixtures("as_root")
def test_error_lines_escape_control_characters_in_names(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "x\r\x1b[2Jy").write_text("not a dir")
    res = volinit("apply", str(vol), "--owner", "1000", "--dir", "x\r\x1b[2Jy/sub")
    assert res.code == 1
    assert res.err.count("\n") == 1 and "\r" not in res.err and "\x1b" not in res.err
    assert "x\\r\\x1b[2Jy: exists and is not a directory" in res.err


@pytest.mark.usefixtures("as_root")
def test_summary_lines_escape_control_characters_in_dir_names(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    res = volinit("apply", str(vol), "--owner", "1000", "--dir", "a\nb", "--dir", "\x1b[31mred")
    assert res.code == 0, res.err
    assert res.err.count("\n") == 1 and "\x1b" not in res.err, res.err
    assert "created a\\nb, \\x1b[31mred;" in res.err
    assert (vol / "a\nb").is_dir() and (vol / "\x1b[31mred").is_dir()


@pytest.mark.parametrize("args,line", [
    (["prune", "/data", "--older-than", "0s"],
     "volinit: error: --older-than: duration '0s' is zero (a prune age must be positive)"),
    (["apply", "/data", "--owner", "1000", "--mode", "9999"],
     "volinit: error: --mode: bad mode '9999' (use a quoted octal string such as \"0750\" or \"1777\")"),
    (["apply", "/data", "--owner", "1000", "--prune", "1d"],
     "volinit: error: --prune: given without --dir (--prune applies to each --dir; add --dir .tmp)"),
    (["apply", "-f", ""], "volinit: error: -f: empty path (name the spec file, e.g. -f volinit.yaml)"),
])
def test_a_bad_flag_is_named_as_the_flag_not_as_the_spec(args: list[str], line: str) -> None:
    res = volinit(*args)
    assert res.code == 2
    assert res.errors == [line]


def test_a_relative_dir_after_the_working_dir_was_removed_is_a_usage_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    res = volinit("prune", ".", "--older-than", "1h",
                  prefix=["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(gone)])
    assert res.code == 2
    assert res.errors == ["volinit: error: DIR: '.' is relative and the working directory was removed "
                          "(give the absolute path)"]


def test_doctor_in_a_removed_working_dir_is_a_usage_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    res = volinit("doctor", "--path", ".", env={"TMPDIR": "rel"},
                  prefix=["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(gone)])
    assert res.code == 2
    assert res.errors == ["volinit: error: the working directory was removed (cd to an existing directory and rerun)"]
