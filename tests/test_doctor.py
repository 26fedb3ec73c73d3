"""`volinit doctor`'s engine: every finding, the healthy case, the table and the JSON.

Checks that depend on permissions run doctor in a subprocess as uid 1000 (the tests run as
root, for whom almost everything is writable). The mount checks read a sample mountinfo
through doctor.MOUNTINFO; the seed incidents are replayed in mount namespaces (unshare)
with real read-only and tiny tmpfs mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, unavailable

from volinit import doctor
from volinit.errors import EXIT_USAGE, UsageError

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VARIABLES = ("TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME", "VOLINIT_DIRS")
FAKE = "/volinit-doctor-test"  # a root no machine has: sample mounts live below it

# run as the service user: the arguments arrive as JSON; the overrides stand in for the
# machine's own mounts and tempfile's fixed candidates
RUNNER = """
import json, sys
from volinit import doctor
args = json.loads(sys.argv[1])
if args["mountinfo"]:
    doctor.MOUNTINFO = args["mountinfo"]
if args["fallbacks"] is not None:
    doctor.TEMPFILE_FALLBACKS = tuple(args["fallbacks"])
sys.exit(doctor.run(args["paths"], args["min_free"], args["as_json"]))
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def user_python() -> str:
    """A Python >= 3.10 that uid 1000 can run (a venv under /root is out of its reach)."""
    if os.geteuid() != 0:
        unavailable("needs root, to run doctor as uid 1000")
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        try:
            probe = subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 10)"],
                                   user=1000, group=1000, extra_groups=[], capture_output=True)
        except OSError:
            continue
        if probe.returncode == 0:
            return python
    unavailable("no Python >= 3.10 that uid 1000 can run")
    raise AssertionError("unreachable")


def owned_dir(path: Path, uid: int = 0, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def mountinfo(path: Path, *mounts: tuple[str, str]) -> str:
    """A mountinfo file: an overlay at /, then (mount point, fstype) in mount order."""
    lines = ["1 0 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w"]
    for number, (point, fstype) in enumerate(mounts, 2):
        escaped = point.replace("\\", "\\134").replace(" ", "\\040")
        lines.append(f"{number} 1 8:1 /vol{number} {escaped} rw,relatime shared:1 - {fstype} /dev/sda1 rw")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_doctor(
    python: str,
    env: dict[str, str],
    *,
    paths: list[str] | None = None,
    min_free: int | None = None,
    cwd: Path,
    mountinfo_file: str | None = None,
    fallbacks: list[str] | None = None,
    as_json: bool = True,
    uid: int = 1000,
    namespace_setup: str | None = None,
) -> tuple[int, Any, str]:
    """doctor.run in a subprocess as uid; returns (exit code, the JSON document or the text, stderr)."""
    args = {"paths": paths or [], "min_free": min_free, "as_json": as_json,
            "mountinfo": mountinfo_file, "fallbacks": fallbacks}
    argv = [python, "-c", RUNNER, json.dumps(args)]
    full_env = {"PATH": SYSTEM_PATH, "PYTHONPATH": str(REPO), "LC_ALL": "C", **env}
    if namespace_setup is None:
        result = subprocess.run(argv, env=full_env, cwd=cwd, user=uid, group=uid, extra_groups=[],
                                capture_output=True, text=True, timeout=60)
    else:
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        script = f'set -e\n{namespace_setup}\ncd "$DOCTOR_CWD"\nexec "$@"'
        result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                                 *drop, *argv],
                                env={**full_env, "DOCTOR_CWD": str(cwd)}, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode in (0, 1), result.stderr
    output = json.loads(result.stdout) if as_json else result.stdout
    return result.returncode, output, result.stderr


def findings(document: dict[str, Any], check: str | None = None) -> list[dict[str, str]]:
    return [f for f in document["findings"] if check is None or f["check"] == check]


# --- parse_size ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("1024", 1024), ("0", 0), ("512k", 512 * 1024), ("512K", 512 * 1024), ("64M", 64 << 20),
     ("64m", 64 << 20), ("64MB", 64 << 20), ("64MiB", 64 << 20), ("1G", 1 << 30), ("1.5G", 3 << 29),
     ("2T", 2 << 40), (" 8M ", 8 << 20), ("100B", 100)],
)
def test_parse_size_reads_powers_of_1024(text: str, size: int) -> None:
    assert doctor.parse_size(text) == size


@pytest.mark.parametrize("text", ["9" * 330, "9" * 310 + ".5G", "9" * 5000, "1048577T", "2000000000000000000"])
def test_parse_size_refuses_sizes_past_any_disk(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        doctor.parse_size(text)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.line().endswith(": larger than any disk (over 1 EiB) (give the free space needed, e.g. 2G)")


@pytest.mark.parametrize("text", ["", "M", "-1M", "64X", "1.5", "64iB", "1e6", "64 M B", "0x40", "1,5G"])
def test_parse_size_rejects_with_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        doctor.parse_size(text)
    assert caught.value.exit_code == EXIT_USAGE
    line = caught.value.line()
    assert line.startswith(f"--min-free {text!r}: ")
    assert "e.g. 64M" in line or "unit" in line


def test_parse_size_names_the_flag_it_was_given() -> None:
    with pytest.raises(UsageError) as caught:
        doctor.parse_size("lots", "--need")
    assert caught.value.line().startswith("--need 'lots': not a size")


# --- the healthy case ------------------------------------------------------------------


def test_healthy_service_user_exits_0(user_python: str, work: Path) -> None:
    app = owned_dir(work / "app", uid=1000)
    env = {"TMPDIR": f"{app}/tmp", "XDG_CACHE_HOME": f"{app}/cache", "HF_HOME": f"{app}/hf",
           "TORCH_HOME": f"{app}/torch", "VOLINIT_DIRS": f"{app}/a:{app}/b {app}/c"}
    for path in env.values():
        for one in path.replace(":", " ").split():
            owned_dir(Path(one), uid=1000)
    sample = mountinfo(work / "mountinfo", (str(app), "ext4"))
    code, document, _ = run_doctor(user_python, env, paths=[f"{app}/cache"], min_free=1, cwd=app,
                                   mountinfo_file=sample)
    assert code == 0
    assert document["healthy"] is True
    assert document["findings"] == []
    assert document["tempdir"] == f"{app}/tmp"
    assert (document["uid"], document["gid"]) == (1000, 1000)
    checked = [(c["check"], c["where"]) for c in document["checks"]]
    assert checked == [("temp dir", f"{app}/tmp"), ("TMPDIR", f"{app}/tmp"), ("XDG_CACHE_HOME", f"{app}/cache"),
                       ("HF_HOME", f"{app}/hf"), ("TORCH_HOME", f"{app}/torch"), ("VOLINIT_DIRS", f"{app}/a"),
                       ("VOLINIT_DIRS", f"{app}/b"), ("VOLINIT_DIRS", f"{app}/c"), ("free space", f"{app}/tmp"),
                       ("persistence", f"{app}/cache")]
    # the write tests cleaned up after themselves
    assert all(list(Path(where).iterdir()) == [] for _, where in checked[:8])


def test_healthy_table_for_people(user_python: str, work: Path) -> None:
    tmp = owned_dir(work / "tmp", uid=1000)
    code, text, _ = run_doctor(user_python, {"TMPDIR": str(tmp)}, cwd=work, as_json=False)
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "volinit doctor as uid:gid 1000:1000: healthy"
    assert lines[1].split() == ["CHECK", "WHERE", "RESULT"]
    assert f"{tmp}  ok: Python's tempfile will use it" in text
    assert "PROBLEM" not in text and "fix:" not in text


# --- the temp dir tempfile would pick (seed 000) ---------------------------------------


def test_no_usable_temp_dir_lists_every_candidate(user_python: str, work: Path) -> None:
    root_owned = owned_dir(work / "root-owned")
    a_file = work / "a-file"
    a_file.write_text("")
    app = owned_dir(work / "app")  # the working dir: tempfile's last resort
    env = {"TMPDIR": f"{work}/missing", "TMP": str(root_owned)}
    fallbacks = [str(root_owned), str(a_file), f"{work}/also-missing"]
    code, document, _ = run_doctor(user_python, env, cwd=app, fallbacks=fallbacks, min_free=1)
    assert code == 1
    [finding] = findings(document, "temp dir")
    candidates = [f"{work}/missing", str(root_owned), *fallbacks, str(app)]
    assert finding["what"] == "no usable temp dir for Python's tempfile"
    assert finding["where"] == str(candidates)  # as tempfile's "No usable temporary directory found in [...]"
    assert f"{work}/missing: No such file or directory" in finding["why"]
    assert f"{root_owned}: Permission denied" in finding["why"]
    assert f"{a_file}: Not a directory" in finding["why"]
    assert f"{app}: Permission denied" in finding["why"]
    assert "set TMPDIR to a dir on a volume and run the volinit init service" in finding["fix"]
    assert document["tempdir"] is None
    [space] = findings(document, "free space")
    assert space["what"] == "cannot check free space: no usable temp dir"


@pytest.mark.parametrize(
    "case",
    ["TMPDIR usable", "TMPDIR missing, TEMP usable", "TMPDIR root-owned, TMP usable", "none set"],
)
def test_temp_dir_is_the_one_tempfile_picks(user_python: str, work: Path, case: str) -> None:
    usable = owned_dir(work / "usable", uid=1000)
    root_owned = owned_dir(work / "root-owned")
    env = {
        "TMPDIR usable": {"TMPDIR": str(usable)},
        "TMPDIR missing, TEMP usable": {"TMPDIR": f"{work}/missing", "TEMP": str(usable)},
        "TMPDIR root-owned, TMP usable": {"TMPDIR": str(root_owned), "TMP": str(usable)},
        "none set": {},
    }[case]
    code, document, _ = run_doctor(user_python, env, cwd=work)
    picked = subprocess.run([user_python, "-c", "import tempfile; print(tempfile.gettempdir())"],
                            env={"PATH": SYSTEM_PATH, **env}, cwd=work, user=1000, group=1000, extra_groups=[],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert document["tempdir"] == picked
    assert findings(document, "temp dir") == []
    # a TMPDIR tempfile had to skip is a problem of its own, even though a fallback works
    tmpdir_skipped = "TMPDIR" in env and env["TMPDIR"] != str(usable)
    assert bool(findings(document, "TMPDIR")) == tmpdir_skipped


def test_seed_000_read_only_container_without_writable_tmp(user_python: str, work: Path,
                                                             namespaces: None) -> None:
    # `read_only: true`, user 1000, no tmpfs: every place tempfile looks is read-only
    # (bound onto themselves and made read-only, so the test's own dirs below /tmp stay visible)
    app = owned_dir(work / "app")
    setup = "for dir in /tmp /var/tmp; do mount --bind $dir $dir; mount -o remount,bind,ro $dir; done"
    code, document, _ = run_doctor(user_python, {}, cwd=app, namespace_setup=setup)
    assert code == 1
    [finding] = findings(document, "temp dir")
    assert finding["where"] == str(["/tmp", "/var/tmp", "/usr/tmp", str(app)])
    assert "/tmp: Read-only file system" in finding["why"]
    assert "/usr/tmp: No such file or directory" in finding["why"]
    # the same list Python itself gives up on
    script = "import tempfile\ntry:\n    tempfile.gettempdir()\nexcept FileNotFoundError as e:\n    print(e)"
    drop = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
    raised = subprocess.run(["unshare", "-m", "sh", "-c", f'set -e\n{setup}\ncd "$1"\nshift\nexec "$@"', "sh",
                             str(app), *drop, user_python, "-c", script],
                            env={"PATH": SYSTEM_PATH}, capture_output=True, text=True, check=True).stdout
    assert raised.strip().endswith(f"No usable temporary directory found in {finding['where']}")


# --- cache variables (seed 002) --------------------------------------------------------


def test_cache_dir_the_user_cannot_write(user_python: str, work: Path) -> None:
    cache = owned_dir(work / "cache")
    code, document, _ = run_doctor(user_python, {"XDG_CACHE_HOME": str(cache)}, cwd=work)
    assert code == 1
    [finding] = findings(document, "XDG_CACHE_HOME")
    assert finding["what"] == "XDG_CACHE_HOME is not a writable dir"
    assert finding["where"] == str(cache)
    assert "uid:gid 1000:1000 cannot create a file in it (Permission denied" in finding["why"]
    assert f"{cache} is owned by 0:0, mode 0755" in finding["why"]
    assert "volinit init service" in finding["fix"]
    assert "volinit repair VOLUME --owner 1000:1000" in finding["fix"]


def test_missing_cache_dir_the_user_cannot_create(user_python: str, work: Path) -> None:
    volume = owned_dir(work / "volume")
    code, document, _ = run_doctor(user_python, {"TORCH_HOME": f"{volume}/torch/hub"}, cwd=work)
    assert code == 1
    [finding] = findings(document, "TORCH_HOME")
    assert f"it does not exist, and uid:gid 1000:1000 cannot create it in {volume} (Permission denied" \
        in finding["why"]
    assert "volinit repair VOLUME --owner 1000:1000" in finding["fix"]


def test_missing_cache_dir_the_user_could_create(user_python: str, work: Path) -> None:
    volume = owned_dir(work / "volume", uid=1000)
    code, document, _ = run_doctor(user_python, {"HF_HOME": f"{volume}/hf"}, cwd=work)
    assert code == 1
    [finding] = findings(document, "HF_HOME")
    assert finding["why"] == f"it does not exist (uid:gid 1000:1000 could create it in {volume})"
    assert finding["fix"] == "run the volinit init service before this one, or start it through volinit-entrypoint"
    assert not (volume / "hf").exists(), "doctor only looks"


def test_cache_dir_inside_site_packages(user_python: str, work: Path) -> None:
    # seed 002: a library's cache defaulted into the read-only package dir
    package = owned_dir(work / "usr/lib/python3.12/site-packages/somelib")
    code, document, _ = run_doctor(user_python, {"HF_HOME": f"{package}/.cache"}, cwd=work)
    assert code == 1
    [finding] = findings(document, "HF_HOME")
    assert "it is inside site-packages, the Python install" in finding["why"]
    assert finding["fix"].startswith("point HF_HOME at a dir on a volume, outside the Python install")


def test_file_where_the_cache_dir_should_be(user_python: str, work: Path) -> None:
    (work / "cache").write_text("")
    code, document, _ = run_doctor(user_python, {"XDG_CACHE_HOME": f"{work}/cache/sub"}, cwd=work)
    assert code == 1
    [finding] = findings(document, "XDG_CACHE_HOME")
    assert finding["why"] == f"{work}/cache is not a directory"
    assert finding["fix"] == f"point XDG_CACHE_HOME at a directory, or move {work}/cache out of the way"


def test_volinit_dirs_are_each_checked(user_python: str, work: Path) -> None:
    good = owned_dir(work / "good", uid=1000)
    bad = owned_dir(work / "bad")
    env = {"VOLINIT_DIRS": f" {good}::{bad} {good}/also:"}
    owned_dir(good / "also", uid=1000)
    code, document, _ = run_doctor(user_python, env, cwd=work)
    assert code == 1
    assert [(c["where"], c["ok"]) for c in document["checks"] if c["check"] == "VOLINIT_DIRS"] == [
        (str(good), True), (str(bad), False), (f"{good}/also", True)]


def test_read_only_mount_is_found_even_by_root(work: Path, namespaces: None) -> None:
    # os.access says root may write anywhere; only a real write meets the read-only mount
    cache = owned_dir(work / "cache")
    setup = f'mount -o bind,ro "{cache}" "{cache}"'
    code, document, _ = run_doctor(sys.executable, {"XDG_CACHE_HOME": str(cache)}, cwd=work, uid=0,
                                   namespace_setup=setup)
    assert code == 1
    [finding] = findings(document, "XDG_CACHE_HOME")
    assert "cannot create a file in it (Read-only file system" in finding["why"]
    assert finding["fix"] == f"mount a volume at {cache}, or point XDG_CACHE_HOME at a dir on one"


# --- free space (seed 003) -------------------------------------------------------------


def test_free_space_against_min_free(work: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TMPDIR", str(work))
    monkeypatch.setattr(doctor, "MOUNTINFO", mountinfo(work / "mountinfo", (str(work), "tmpfs")))
    assert doctor.run([], 1, as_json=True) == 0
    enough = json.loads(capsys.readouterr().out)
    assert findings(enough) == []
    assert doctor.run([], 1 << 60, as_json=True) == 1
    [finding] = findings(json.loads(capsys.readouterr().out), "free space")
    assert finding["what"] == "too little free space for temp files"
    assert finding["where"] == str(work)
    assert finding["why"].endswith(f"free on tmpfs at {work}, 1048576T needed")
    assert finding["fix"].startswith(f"give the tmpfs at {work} at least 1048576T (tmpfs size=)")


def test_free_space_is_only_reported_without_min_free(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TMPDIR", str(work))
    assert doctor.run([], None, as_json=False) == 0
    assert "(no --min-free given)" in capsys.readouterr().out


def test_seed_003_eight_megabyte_tmpfs_against_64m(user_python: str, work: Path, namespaces: None) -> None:
    tmp = owned_dir(work / "tmp")
    setup = f'mount -t tmpfs -o size=8m,uid=1000,gid=1000 tmpfs "{tmp}"'
    code, document, _ = run_doctor(user_python, {"TMPDIR": str(tmp)}, cwd=work,
                                   min_free=doctor.parse_size("64M"), namespace_setup=setup)
    assert code == 1
    [finding] = findings(document)
    assert finding["check"] == "free space"
    assert finding["why"] == f"8M free on tmpfs at {tmp}, 64M needed"
    assert f"give the tmpfs at {tmp} at least 64M" in finding["fix"]


def test_full_temp_dir_is_skipped_as_tempfile_skips_it(user_python: str, work: Path, namespaces: None) -> None:
    # creating a file still works on a full tmpfs; writing to it does not
    tmp = owned_dir(work / "tmp")
    setup = (f'mount -t tmpfs -o size=64k,uid=1000,gid=1000 tmpfs "{tmp}"\n'
             f'dd if=/dev/zero of="{tmp}/filler" bs=4k 2>/dev/null || :')
    code, document, _ = run_doctor(user_python, {"TMPDIR": str(tmp)}, cwd=work, namespace_setup=setup)
    assert code == 1
    assert document["tempdir"] == "/tmp"
    [finding] = findings(document, "TMPDIR")
    assert "(No space left on device;" in finding["why"]
    [row] = [c for c in document["checks"] if c["check"] == "temp dir"]
    assert row["detail"] == f"Python's tempfile will use it (after {tmp}: No space left on device)"


# --- persistence (seed 004) ------------------------------------------------------------


def test_persistence_follows_the_mount_holding_each_path(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    sample = mountinfo(
        work / "mountinfo",
        (f"{FAKE}/cache", "ext4"),
        (f"{FAKE}/tmp", "tmpfs"),
        (f"{FAKE}/with space", "ext4"),
        (f"{FAKE}/cache/scratch", "tmpfs"),  # a tmpfs inside a volume: the deeper mount wins
        (f"{FAKE}/stacked", "tmpfs"),
        (f"{FAKE}/stacked", "xfs"),  # mounted over the tmpfs: the later one is what you see
    )
    monkeypatch.setattr(doctor, "MOUNTINFO", sample)
    (work / "link").symlink_to(f"{FAKE}/tmp/data")
    expected = {
        f"{FAKE}/cache/models": True,
        f"{FAKE}/cachex": False,  # a sibling sharing the prefix is not inside the volume
        f"{FAKE}/tmp/data": False,
        f"{FAKE}/with space/d": True,
        f"{FAKE}/cache/scratch/x": False,
        f"{FAKE}/stacked/d": True,
        f"{FAKE}": False,
    }
    assert doctor.run([*expected, str(work / "link")], None, as_json=True) == 1
    document = json.loads(capsys.readouterr().out)
    rows = [c for c in document["checks"] if c["check"] == "persistence"]
    assert {row["where"]: row["ok"] for row in rows[:-1]} == expected
    assert rows[-1]["where"] == f"{work}/link ({FAKE}/tmp/data)" and not rows[-1]["ok"]
    by_where = {f["where"]: f for f in findings(document, "persistence")}
    assert by_where[f"{FAKE}/cachex"]["why"].startswith("it is on / (overlay), the container's own writable layer")
    assert by_where[f"{FAKE}/tmp/data"]["why"].startswith(f"it is on a tmpfs mounted at {FAKE}/tmp: lost when")
    assert by_where[f"{FAKE}/cache/scratch/x"]["fix"] == f"mount a volume at {FAKE}/cache/scratch/x"
    assert all(f["what"] == "data will not outlive the container" for f in by_where.values())


def test_unreadable_mountinfo_is_a_finding(work: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(doctor, "MOUNTINFO", str(work / "absent"))
    assert doctor.run([str(work)], None, as_json=True) == 1
    [finding] = findings(json.loads(capsys.readouterr().out), "persistence")
    assert finding["what"] == "cannot tell whether the dir is on a volume"
    assert "No such file or directory" in finding["why"]


def test_seed_004_real_mounts(work: Path, namespaces: None) -> None:
    volume = owned_dir(work / "volume")
    scratch = owned_dir(work / "scratch")
    setup = f'mount --bind "{volume}" "{volume}"\nmount -t tmpfs tmpfs "{scratch}"'
    paths = [f"{volume}/models", f"{scratch}/uploads", f"{work}/layer"]
    code, document, _ = run_doctor(sys.executable, {}, paths=paths, cwd=work, uid=0, namespace_setup=setup)
    assert code == 1
    assert [(c["where"], c["ok"]) for c in document["checks"] if c["check"] == "persistence"] == [
        (paths[0], True), (paths[1], False), (paths[2], False)]


# --- output ----------------------------------------------------------------------------


def test_json_lists_each_finding_with_what_where_why_and_fix(user_python: str, work: Path) -> None:
    env = {"TMPDIR": f"{owned_dir(work / 'locked')}/tmp", "HF_HOME": str(owned_dir(work / 'hf'))}
    sample = mountinfo(work / "mountinfo")
    code, document, stderr = run_doctor(user_python, env, paths=[f"{FAKE}/data"], min_free=1 << 60, cwd=work,
                                        mountinfo_file=sample)
    assert code == 1
    assert stderr == ""
    assert document["healthy"] is False
    assert [f["check"] for f in document["findings"]] == ["TMPDIR", "HF_HOME", "free space", "persistence"]
    for finding in document["findings"]:
        assert set(finding) == {"check", "what", "where", "why", "fix"}
        assert all(finding.values()), finding
    assert len(document["checks"]) == 5


def test_table_numbers_each_problem_with_its_fix(user_python: str, work: Path) -> None:
    cache = owned_dir(work / "cache")
    code, text, _ = run_doctor(user_python, {"XDG_CACHE_HOME": str(cache)}, paths=[f"{FAKE}/data"], cwd=work,
                               mountinfo_file=mountinfo(work / "mountinfo"), as_json=False)
    assert code == 1
    assert text.splitlines()[0] == "volinit doctor as uid:gid 1000:1000: 2 problems"
    assert f"XDG_CACHE_HOME  {cache}" in text
    assert "PROBLEM: uid:gid 1000:1000 cannot create a file in it" in text
    assert f"\n1. XDG_CACHE_HOME is not a writable dir: {cache}\n   why: " in text
    assert f"\n2. data will not outlive the container: {FAKE}/data\n" in text
    assert f"   fix: mount a volume at {FAKE}/data\n" in text


def test_a_newline_in_a_variable_cannot_add_a_line_to_the_table(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TMPDIR", f"{work}/gone\nTMPDIR  /ok  ok: forged")
    doctor.run([], None, as_json=False)
    out = capsys.readouterr().out
    assert "\nTMPDIR  /ok" not in out
    assert f"TMPDIR      {work}/gone\\nTMPDIR  /ok  ok: forged  PROBLEM: " in out
