"""The entrypoint shim, run the way a service image runs it: under dash, busybox sh and bash.

Each test runs the real script in a subprocess and checks what a user would notice: the
exit code, the one error line, what exists on disk afterwards, the PID of the command.
Under busybox the PATH starts with busybox's applets, so find, rm, mkdir, ls and id are
busybox's too (as on Alpine). Tests that need a mount or PID namespace use unshare(1).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, unavailable

SHIM = REPO / "entrypoint" / "volinit-entrypoint"
SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"], "bash": ["bash"]}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DAY = 86400


@dataclass(frozen=True)
class Shell:
    name: str
    argv: tuple[str, ...]  # absolute path of the shell, then its arguments
    path: str  # PATH for the shim and its command


@pytest.fixture(scope="session")
def busybox_bin(public_dir: Path) -> Path | None:
    """A dir of busybox applet links, so the busybox runs use busybox's utilities too."""
    busybox = shutil.which("busybox")
    if busybox is None:
        return None
    applets = public_dir / "busybox-bin"
    applets.mkdir(mode=0o755)
    subprocess.run([busybox, "--install", "-s", str(applets)], check=True)
    return applets


@pytest.fixture(params=list(SHELLS))
def shell(request: pytest.FixtureRequest, busybox_bin: Path | None) -> Shell:
    name = request.param
    argv = SHELLS[name]
    binary = shutil.which(argv[0])
    if binary is None:
        unavailable(f"{argv[0]} is not installed (apt-get install {argv[0]})")
    path = f"{busybox_bin}:{SYSTEM_PATH}" if name == "busybox" else SYSTEM_PATH
    return Shell(name, (binary, *argv[1:]), path)


def run_shim(
    shell: Shell,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    uid: int | None = None,
    gid: int | None = None,
    namespace_setup: str | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the shim with CMD `args` in a clean environment.

    uid/gid drop privileges first; namespace_setup is sh run as root, with util-linux's mount
    (busybox's ignores `bind,ro`), in a fresh mount and PID namespace (the shim is then PID 1,
    as in a container) before the shim starts.
    """
    argv: list[str] = [*shell.argv, str(SHIM), *args]
    if uid is not None:
        argv = [
            shutil.which("setpriv") or "setpriv",
            f"--reuid={uid}", f"--regid={gid if gid is not None else uid}", "--clear-groups", *argv,
        ]
    if namespace_setup is not None:
        argv = ["unshare", "-m", "-p", "-f", "--propagation", "private",
                "/bin/sh", "-c", f'set -e\n(PATH={SYSTEM_PATH}\n{namespace_setup}\n)\nexec "$@"', "sh", *argv]
    full_env = {"PATH": shell.path, "LC_ALL": "C", **(env or {})}
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=60, cwd=cwd)


def tree(root: Path) -> list[tuple[str, int, int, int]]:
    """Every entry below root: relative path, mode, uid and gid."""
    entries = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entries.append((str(path.relative_to(root)), st.st_mode, st.st_uid, st.st_gid))
    return entries


def age(path: Path, seconds: float) -> None:
    """Set path's mtime (the link's own, for a symlink) to `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


# --- dirs ------------------------------------------------------------------------------


def test_creates_every_named_dir_and_leaves_nothing_in_them(shell: Shell, work: Path) -> None:
    env = {
        "TMPDIR": str(work / "app/.tmp"),
        "XDG_CACHE_HOME": str(work / "app/cache dir"),  # a space in a variable is fine
        "HF_HOME": str(work / "models/hf"),
        "TORCH_HOME": str(work / "models/torch"),
        # spaces, tabs, newlines and colons separate; empty fields are ignored
        "VOLINIT_DIRS": f":{work}/extra/a::{work}/extra/b {work}/extra/c\t{work}/extra/d\n{work}/extra/e:",
    }
    result = run_shim(shell, ["true"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    expected = ["app/.tmp", "app/cache dir", "models/hf", "models/torch",
                "extra/a", "extra/b", "extra/c", "extra/d", "extra/e"]
    for rel in expected:
        assert (work / rel).is_dir(), rel
        assert list((work / rel).iterdir()) == [], f"{rel} holds a leftover probe"
    assert sorted(p.name for p in (work / "extra").iterdir()) == ["a", "b", "c", "d", "e"]


def test_unset_and_empty_variables_create_nothing(shell: Shell, work: Path) -> None:
    result = run_shim(shell, ["true"], {"TMPDIR": "", "HF_HOME": "", "VOLINIT_DIRS": " : "})
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []


def test_second_start_changes_nothing(shell: Shell, work: Path) -> None:
    env = {"TMPDIR": str(work / "tmp"), "XDG_CACHE_HOME": str(work / "cache"),
           "VOLINIT_DIRS": str(work / "data")}
    assert run_shim(shell, ["true"], env).returncode == 0
    # a mode the operator chose must survive restarts
    (work / "tmp").chmod(0o700)
    (work / "cache/kept").write_text("state")
    before = tree(work)
    second = run_shim(shell, ["true"], env)
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    assert tree(work) == before


def test_one_dir_named_by_two_variables(shell: Shell, work: Path) -> None:
    same = str(work / "shared")
    result = run_shim(shell, ["true"], {"TMPDIR": same, "XDG_CACHE_HOME": same, "VOLINIT_DIRS": same})
    assert result.returncode == 0, result.stderr
    assert list(Path(same).iterdir()) == []


def test_works_as_non_root_on_a_read_only_root(shell: Shell, work: Path, namespaces: None) -> None:
    # seed 000: a uid-1000 service with `read_only: true` and its TMPDIR on a volume
    volume = work / "volume"
    volume.mkdir()
    setup = 'mount -o remount,bind,ro /\nmount -t tmpfs -o mode=1777 tmpfs "$VOLUME"'
    env = {"VOLUME": str(volume), "TMPDIR": f"{volume}/tmp", "XDG_CACHE_HOME": f"{volume}/cache"}
    cmd = ["sh", "-c", 'echo hello >"$TMPDIR/f" && cat "$TMPDIR/f" && ls -ldn "$XDG_CACHE_HOME"']
    result = run_shim(shell, cmd, env, uid=1000, namespace_setup=setup)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "hello"
    assert lines[1].split()[2:4] == ["1000", "1000"]


def test_leftover_probe_from_a_killed_start_is_cleared(shell: Shell, work: Path, namespaces: None) -> None:
    # in a container the shim is always PID 1, so a start killed between the probe's
    # create and rm leaves the very name the next start wants
    tmp = work / "tmp"
    tmp.mkdir()
    (tmp / ".volinit-probe.1.0").write_text("")
    result = run_shim(shell, ["sh", "-c", "echo $$"], {"TMPDIR": str(tmp)}, namespace_setup=":")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert list(tmp.iterdir()) == []


def test_a_fifo_under_the_probe_name_cannot_hang_the_start(shell: Shell, work: Path, namespaces: None) -> None:
    # noclobber refuses to overwrite regular files only: opening a FIFO with no reader
    # would block the container's start for good (and PID 1 ignores SIGTERM)
    tmp = work / "tmp"
    tmp.mkdir()
    os.mkfifo(tmp / ".volinit-probe.1.0")
    result = run_shim(shell, ["sh", "-c", "echo started"], {"TMPDIR": str(tmp)}, namespace_setup=":")
    assert (result.returncode, result.stdout) == (0, "started\n"), result.stderr
    assert list(tmp.iterdir()) == []


# --- the command -----------------------------------------------------------------------


ODD_ARGS = ["plain", "two words", "", "'single'", '"double"', "*", "?[ab]", "$HOME", "`id`",
            "$(id)", "back\\slash", "-n", "--", "tab\there", "new\nline", " lead", "trail ", "ümlaut"]


def test_command_and_arguments_pass_through_unchanged(shell: Shell, work: Path) -> None:
    # files the glob arguments would match, were anything to expand them
    for name in ("a", "b", "x"):
        (work / name).write_text("")
    printer = ["python3", "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    env = {"TMPDIR": str(work / "tmp"), "PATH": f"{shell.path}:{os.path.dirname(shutil.which('python3') or '')}"}
    result = subprocess.run(
        [*shell.argv, str(SHIM), *printer, *ODD_ARGS],
        env={"LC_ALL": "C.UTF-8", **env}, cwd=work, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ODD_ARGS


def test_command_exit_code_is_the_services(shell: Shell, work: Path) -> None:
    result = run_shim(shell, ["sh", "-c", "exit 42"], {"TMPDIR": str(work / "tmp")})
    assert result.returncode == 42


def test_exec_replaces_the_shim(shell: Shell, work: Path) -> None:
    env = {"PATH": shell.path, "LC_ALL": "C", "TMPDIR": str(work / "tmp"),
           "XDG_CACHE_HOME": str(work / "cache"), "VOLINIT_PRUNE": "1d"}
    with subprocess.Popen([*shell.argv, str(SHIM), "sh", "-c", "echo $$"], env=env,
                          stdout=subprocess.PIPE, text=True) as child:
        out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    # the service got the shim's PID: exec'd, not run as a child (it gets docker stop's signal)
    assert int(out) == child.pid


def test_no_command_is_a_usage_error(shell: Shell, work: Path) -> None:
    result = run_shim(shell, [], {"TMPDIR": str(work / "tmp")})
    assert result.returncode == 64
    assert result.stderr.startswith("volinit-entrypoint: error: no command")
    assert "Usage: volinit-entrypoint CMD [ARG...]" in result.stderr
    assert not (work / "tmp").exists()


def test_help_lists_the_variables(shell: Shell) -> None:
    result = run_shim(shell, ["--help"])
    assert result.returncode == 0
    for name in ("TMPDIR", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME", "VOLINIT_DIRS", "VOLINIT_PRUNE"):
        assert name in result.stdout


# --- unusable dirs ---------------------------------------------------------------------


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 73, (result.returncode, result.stderr)
    assert result.stdout == "", "the command ran"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("volinit-entrypoint: error: ")
    return lines[0]


@pytest.mark.parametrize(("uid", "gid"), [(1000, 1000), (4242, 4343)])
def test_root_owned_parent_stops_the_service(shell: Shell, work: Path, uid: int, gid: int) -> None:
    # the classic: a volume created by Docker as root, a service running as a user
    volume = work / "volume"
    volume.mkdir(mode=0o755)
    target = volume / "app tmp/sub"
    result = run_shim(shell, ["echo", "service ran"], {"TMPDIR": str(target)}, uid=uid, gid=gid)
    line = assert_one_error_line(result)
    assert f"TMPDIR={target}:" in line
    assert f"uid:gid {uid}:{gid}" in line
    assert f"{volume} is owned by 0:0" in line
    assert "Permission denied" in line
    assert "volinit init service" in line
    assert f"volinit repair VOLUME --owner {uid}:{gid}" in line
    assert not (volume / "app tmp").exists()


def test_existing_dir_the_user_cannot_write(shell: Shell, work: Path) -> None:
    cache = work / "cache"
    cache.mkdir(mode=0o755)
    result = run_shim(shell, ["echo", "service ran"], {"XDG_CACHE_HOME": str(cache)}, uid=1000)
    line = assert_one_error_line(result)
    assert f"XDG_CACHE_HOME={cache}: cannot create a file in it as uid:gid 1000:1000" in line
    assert f"{cache} is owned by 0:0, mode drwxr-xr-x" in line
    assert "volinit repair VOLUME --owner 1000:1000" in line


def test_failure_in_a_later_dir_cleans_up_the_earlier_probes(shell: Shell, work: Path) -> None:
    good = work / "good"
    good.mkdir()
    os.chown(good, 1000, 1000)
    bad = work / "bad"
    bad.mkdir(mode=0o755)
    env = {"TMPDIR": str(good), "VOLINIT_DIRS": f"{work}/good/sub:{bad}/x"}
    line = assert_one_error_line(run_shim(shell, ["true"], env, uid=1000))
    assert f"VOLINIT_DIRS={bad}/x:" in line
    assert [p.name for p in good.iterdir()] == ["sub"]
    assert list((good / "sub").iterdir()) == []


def test_file_where_a_dir_should_be(shell: Shell, work: Path) -> None:
    (work / "cache").write_text("not a dir")
    line = assert_one_error_line(run_shim(shell, ["true"], {"HF_HOME": str(work / "cache")}))
    assert f"HF_HOME={work}/cache: cannot use it as uid:gid 0:0 (it is not a directory)" in line
    assert f"point HF_HOME at a directory, or move {work}/cache out of the way and rerun the volinit init service" in line
    line = assert_one_error_line(run_shim(shell, ["true"], {"TORCH_HOME": str(work / "cache/torch")}))
    assert f"TORCH_HOME={work}/cache/torch: cannot create it" in line
    assert f"({work}/cache is not a directory)" in line


def test_read_only_mount_fails_even_for_root(shell: Shell, work: Path, namespaces: None) -> None:
    # `test -w` says yes to root whatever the mount says: only a real write tells
    site = work / "site-packages"
    (site / "pkg").mkdir(parents=True)
    setup = 'mount -o bind,ro "$SITE" "$SITE"'
    for variable, target in (("TMPDIR", site / "pkg"), ("HF_HOME", site / "pkg/hf")):
        result = run_shim(shell, ["true"], {"SITE": str(site), variable: str(target)}, namespace_setup=setup)
        line = assert_one_error_line(result)
        assert f"{variable}={target}:" in line
        assert "Read-only file system" in line
        assert (f"mount a volume at {target} and let the volinit init service give it to 0:0, "
                f"or point {variable} at a dir on one") in line


# --- as root (the gosu pattern) --------------------------------------------------------

# Swaps pairs of names atomically (renameat2 RENAME_EXCHANGE) as fast as it can: the user
# who owns a volume turning a dir in it into a symlink and back, hoping root follows it.
FLIPPER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
print("flipping", flush=True)
while True:
    libc.renameat2(-100, a, -100, b, 2)
"""


def user_volume(work: Path) -> tuple[Path, Path]:
    """A volume uid 1000 owns, and a root-owned dir outside it (standing in for /etc/cron.weekly)."""
    volume, outside = work / "volume", work / "outside"
    volume.mkdir()
    os.chown(volume, 1000, 1000)
    outside.mkdir(mode=0o755)
    age(outside, DAY)  # so that a file made and removed in it shows in its mtime
    return volume, outside


@pytest.mark.parametrize("variable, rel", [("TMPDIR", ".tmp/x"), ("XDG_CACHE_HOME", ".tmp")])
def test_as_root_a_planted_symlink_is_never_followed(shell: Shell, work: Path, variable: str, rel: str) -> None:
    # A root entrypoint that drops privileges after the shim: `mkdir -p` followed uid 1000's
    # `.tmp -> /etc/cron.weekly` and made /etc/cron.weekly/x, and the probe wrote in there.
    volume, outside = user_volume(work)
    (volume / ".tmp").symlink_to(outside)
    os.chown(volume / ".tmp", 1000, 1000, follow_symlinks=False)
    mtime = outside.stat().st_mtime_ns
    result = run_shim(shell, ["echo", "service ran"], {variable: str(volume / rel)})
    line = assert_one_error_line(result)
    assert line == (f"volinit-entrypoint: error: {variable}={volume}/{rel}: will not follow {volume}/.tmp as uid:gid "
                    f"0:0 (it is a symlink, and the shim follows none as root); {volume} is owned by 1000:1000, mode "
                    f"drwxr-xr-x (point {variable} at the real path, or run volinit-entrypoint as the service's user)")
    assert list(outside.iterdir()) == []
    assert outside.stat().st_mtime_ns == mtime, "something was made and removed in the symlink's target"


def test_as_root_nothing_is_created_in_a_dir_another_uid_owns(shell: Shell, work: Path) -> None:
    # root's .tmp in uid 1000's volume would be unwritable by the service it starts
    volume, _ = user_volume(work)
    result = run_shim(shell, ["echo", "service ran"], {"TMPDIR": str(volume / ".tmp/sub")})
    line = assert_one_error_line(result)
    assert line == (f"volinit-entrypoint: error: TMPDIR={volume}/.tmp/sub: will not create {volume}/.tmp as uid:gid "
                    f"0:0 in a dir another uid owns; {volume} is owned by 1000:1000, mode drwxr-xr-x (run "
                    "volinit-entrypoint as the service's user, e.g. gosu USER volinit-entrypoint CMD, or let the "
                    "volinit init service create it)")
    assert list(volume.iterdir()) == []


def test_as_root_dirs_another_uid_made_are_used_and_the_service_starts_where_the_shim_did(
        shell: Shell, work: Path) -> None:
    # the init service made .tmp for uid 1000; the root shim only checks it and moves on
    volume, _ = user_volume(work)
    (volume / ".tmp").mkdir()
    os.chown(volume / ".tmp", 1000, 1000)
    (work / "app").mkdir()
    (work / "new").mkdir()
    env = {"TMPDIR": str(volume / ".tmp"), "VOLINIT_DIRS": f"{work}/new/a {work}/new//b/"}
    command = 'echo "$PWD ${OLDPWD-unset}"; pwd -P; [ -e /proc/$$/fd/9 ] && echo fd 9 leaked || :'
    result = run_shim(shell, ["sh", "-c", command], env, cwd=work / "app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{work}/app unset", f"{work}/app"]
    assert list((volume / ".tmp").iterdir()) == []
    assert sorted(p.name for p in (work / "new").iterdir()) == ["a", "b"]


def test_as_root_an_inherited_fd_9_reaches_the_service(shell: Shell, work: Path) -> None:
    # the walk keeps fd 9 on the dir it left; a service handed fds (socket activation) keeps its own
    (work / "passed").write_text("mine\n")
    env = {"TMPDIR": str(work / "tmp"), "PASSED": str(work / "passed")}
    argv = ["/bin/sh", "-c", 'exec 9<"$PASSED"; exec "$@"', "sh", *shell.argv, str(SHIM), "sh", "-c", "cat <&9"]
    result = subprocess.run(argv, env={"PATH": shell.path, "LC_ALL": "C", **env}, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "mine\n", "")
    assert (work / "tmp").is_dir() and list((work / "tmp").iterdir()) == []


@pytest.mark.parametrize("value", ["{work}/new/../x", "{work}/./x", "new/x"])
def test_as_root_a_dir_that_is_not_a_clean_absolute_path_is_refused(shell: Shell, work: Path, value: str) -> None:
    (work / "new").mkdir()
    value = value.format(work=work)
    result = run_shim(shell, ["echo", "service ran"], {"HF_HOME": value}, cwd=work)
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr.splitlines() == [
        f"volinit-entrypoint: error: HF_HOME={value}: not a clean absolute path, which the shim needs to create dirs "
        "safely as root (set HF_HOME to the dir's absolute path, without . or .. components)"]
    assert sorted(p.name for p in work.iterdir()) == ["new"] and list((work / "new").iterdir()) == []


def test_as_root_a_dir_swapped_for_a_symlink_mid_walk_never_leads_outside(shell: Shell, work: Path) -> None:
    # uid 1000 swaps a root-owned dir of its volume with a symlink to outside, again and
    # again, while the root shim makes a new dir below that name on every start
    volume, outside = user_volume(work)
    (volume / "sw").mkdir()
    (volume / "link").symlink_to(outside)
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(volume / "sw"), str(volume / "link")],
                               stdout=subprocess.PIPE, text=True)
    outcomes: dict[str, int] = {}
    runs = 0
    try:
        assert flipper.stdout is not None and flipper.stdout.readline() == "flipping\n"
        # the window between the -L test and the cd is microseconds wide: run until it was
        # hit a few times
        deadline = time.monotonic() + 60
        while runs < 200 or (outcomes.get("mid-walk", 0) < 3 and time.monotonic() < deadline):
            result = run_shim(shell, ["true"], {"TMPDIR": f"{volume}/sw/new{runs}"})
            if result.returncode == 0:
                outcome = "made"
            else:
                assert result.returncode == 73, result.stderr
                outcome = "mid-walk" if "it became a symlink while the shim walked it" in result.stderr else "refused"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            runs += 1
            assert list(outside.iterdir()) == [], f"run {runs} made a dir outside: {result.stderr}"
    finally:
        flipper.kill()
        flipper.wait()
    assert outcomes.get("made", 0) > 0 and outcomes.get("refused", 0) > 0, outcomes
    assert outcomes.get("mid-walk", 0) > 0, f"the race never hit its window in {runs} runs: {outcomes}"
    real = volume / "sw" if (volume / "sw").is_dir() and not (volume / "sw").is_symlink() else volume / "link"
    assert len([p for p in real.iterdir() if p.name.startswith("new")]) == outcomes["made"]


# --- pruning ---------------------------------------------------------------------------


def test_prune_removes_old_entries_and_keeps_fresh_ones(shell: Shell, work: Path) -> None:
    tmp = work / "tmp"
    outside = work / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "target.txt").write_text("keep me")
    (outside / "inner/old.txt").write_text("keep me too")
    (tmp / "old-tree/sub").mkdir(parents=True)
    (tmp / "old-tree/sub/old.txt").write_text("")
    (tmp / "old-empty").mkdir()
    (tmp / "old-with-fresh").mkdir()
    (tmp / "old-with-fresh/fresh.txt").write_text("")
    (tmp / "fresh-dir").mkdir()
    (tmp / "fresh-dir/old.txt").write_text("")
    (tmp / "old.txt").write_text("")
    (tmp / "fresh.txt").write_text("")
    (tmp / "link-to-file").symlink_to(outside / "target.txt")
    (tmp / "link-to-dir").symlink_to(outside)
    for rel in ("old-tree/sub/old.txt", "old-tree/sub", "old-tree", "old-empty", "old-with-fresh",
                "fresh-dir/old.txt", "old.txt", "link-to-file", "link-to-dir"):
        age(tmp / rel, 3 * DAY)
    for path in (outside / "target.txt", outside / "inner/old.txt", outside / "inner", outside, tmp):
        age(path, 3 * DAY)

    result = run_shim(shell, ["true"], {"TMPDIR": str(tmp), "VOLINIT_PRUNE": "1d"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert tmp.is_dir(), "TMPDIR itself must stay, however old"
    remaining = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
    assert remaining == ["fresh-dir", "fresh.txt", "old-with-fresh", "old-with-fresh/fresh.txt"]
    # links went as links: what they pointed at is untouched
    assert (outside / "target.txt").read_text() == "keep me"
    assert (outside / "inner/old.txt").read_text() == "keep me too"


@pytest.mark.parametrize(
    ("duration", "kept_age", "removed_age"),
    [
        ("24h", 23 * 3600, 25 * 3600),
        ("1d12h", 35 * 3600, 37 * 3600),
        ("1w", 6 * DAY, 8 * DAY),
        ("90m", 80 * 60, 100 * 60),
        ("010m", 9 * 60, 11 * 60),  # decimal, not octal 8
        ("30s", 5, 5 * 60),  # rounded up to whole minutes: never younger than asked
    ],
)
def test_prune_durations(shell: Shell, work: Path, duration: str, kept_age: int, removed_age: int) -> None:
    tmp = work / "tmp"
    tmp.mkdir()
    for name, seconds in (("kept", kept_age), ("removed", removed_age)):
        (tmp / name).write_text("")
        age(tmp / name, seconds)
    result = run_shim(shell, ["true"], {"TMPDIR": str(tmp), "VOLINIT_PRUNE": duration})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp.iterdir()) == ["kept"]


def test_prune_stays_on_tmpdirs_filesystem(shell: Shell, work: Path, namespaces: None) -> None:
    # busybox find walks into mounts under -xdev once -depth (or -delete) is on: not here
    tmp = work / "tmp"
    (tmp / "mnt").mkdir(parents=True)
    setup = ('mount -t tmpfs tmpfs "$TMPDIR/mnt"\nmkdir "$TMPDIR/mnt/sub"\n'
             'echo data >"$TMPDIR/mnt/sub/old.txt"\n'
             'touch -d "@$OLD" "$TMPDIR/mnt/sub/old.txt" "$TMPDIR/mnt/sub" "$TMPDIR/mnt"')
    env = {"TMPDIR": str(tmp), "VOLINIT_PRUNE": "1d", "OLD": str(int(time.time() - 3 * DAY))}
    result = run_shim(shell, ["cat", f"{tmp}/mnt/sub/old.txt"], env, namespace_setup=setup)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "data\n"


@pytest.mark.parametrize("bad", ["24", "1x", "h", "-1h", "1.5h", "24H", "1d 2h", "9999999999s"])
def test_bad_prune_duration_is_a_usage_error_and_touches_nothing(shell: Shell, work: Path, bad: str) -> None:
    result = run_shim(shell, ["echo", "service ran"], {"TMPDIR": str(work / "tmp"), "VOLINIT_PRUNE": bad})
    assert result.returncode == 64
    assert result.stdout == ""
    assert result.stderr.startswith(f"volinit-entrypoint: error: VOLINIT_PRUNE={bad}: ")
    assert len(result.stderr.splitlines()) == 1
    assert not (work / "tmp").exists()


@pytest.mark.parametrize("zero", ["0s", "0m", "0h0m", "000d"])
def test_a_zero_prune_age_is_refused_and_fresh_files_stay(shell: Shell, work: Path, zero: str) -> None:
    # the spec refuses a zero age; the shim took 0s as "everything": a 2-second-old file went
    tmp = work / "tmp"
    tmp.mkdir()
    (tmp / "job.part").write_text("in use")
    age(tmp / "job.part", 2)
    result = run_shim(shell, ["echo", "service ran"], {"TMPDIR": str(tmp), "VOLINIT_PRUNE": zero})
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr.splitlines() == [
        f"volinit-entrypoint: error: VOLINIT_PRUNE={zero}: a zero age would prune everything in TMPDIR, "
        "however new (give a positive age, e.g. 24h)"]
    assert (tmp / "job.part").read_text() == "in use"


@pytest.mark.parametrize(("tmpdir", "why"), [
    ("{cache}/.tmp/..", "has a . or .. component"),  # pruned the whole volume
    ("{cache}/./.tmp", "has a . or .. component"),
    ("{cache}/.tmp/../../cache/.tmp", "has a . or .. component"),
    ("app/cache/.tmp", "is relative"),  # from the service's working dir, whatever that is
])
def test_prune_refuses_a_tmpdir_that_is_not_a_clean_absolute_path(shell: Shell, work: Path, tmpdir: str,
                                                                   why: str) -> None:
    cache = work / "app/cache"
    (cache / ".tmp").mkdir(parents=True)
    (cache / "models").mkdir()
    (cache / "models/model.bin").write_text("weights")
    (cache / ".tmp/old.part").write_text("")
    for path in (cache / "models/model.bin", cache / "models", cache / ".tmp/old.part"):
        age(path, 3 * DAY)
    before = tree(work)
    value = tmpdir.format(cache=cache)
    result = run_shim(shell, ["echo", "service ran"], {"TMPDIR": value, "VOLINIT_PRUNE": "1d"}, cwd=work)
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr.splitlines() == [
        f"volinit-entrypoint: error: TMPDIR={value}: {why}, and VOLINIT_PRUNE prunes only a clean absolute path "
        "(set TMPDIR to the dir's own absolute path, e.g. /app/cache/.tmp)"]
    assert tree(work) == before  # nothing pruned, nothing created


def test_prune_refuses_the_root_dir_before_find_runs(shell: Shell, work: Path) -> None:
    # A stand-in find records being run: were the refusal to regress, the real one would
    # prune this machine.
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "find").write_text(f'#!/bin/sh\ntouch "{work}/find-ran"\n')
    (bin_dir / "find").chmod(0o755)
    for root in ("/", "//"):
        result = run_shim(shell, ["echo", "service ran"],
                          {"TMPDIR": root, "VOLINIT_PRUNE": "1d", "PATH": f"{bin_dir}:{shell.path}"})
        assert (result.returncode, result.stdout) == (64, "")
        assert result.stderr.splitlines() == [
            f"volinit-entrypoint: error: TMPDIR={root}: is the root dir, and VOLINIT_PRUNE would prune the whole "
            "filesystem (set TMPDIR to a dir of its own, e.g. /app/cache/.tmp)"]
        assert not (work / "find-ran").exists()


def test_prune_without_tmpdir_is_a_usage_error(shell: Shell) -> None:
    result = run_shim(shell, ["true"], {"VOLINIT_PRUNE": "1d"})
    assert result.returncode == 64
    assert "TMPDIR is not set" in result.stderr


def test_prune_leftovers_warn_but_the_service_starts(shell: Shell, work: Path) -> None:
    # another user's old file in a sticky dir: uid 1000 cannot remove it
    tmp = work / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    (tmp / "roots.txt").write_text("")
    age(tmp / "roots.txt", 3 * DAY)
    result = run_shim(shell, ["echo", "service ran"], {"TMPDIR": str(tmp), "VOLINIT_PRUNE": "1d"}, uid=1000)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "service ran\n"
    assert "roots.txt" in result.stderr
    assert (tmp / "roots.txt").exists()





# --- in the image ----------------------------------------------------------------------


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.docker
def test_in_the_image_a_root_entrypoint_creates_nothing_through_the_volume_users_symlink(base_image: str) -> None:
    # The gosu pattern in a real container: the shim runs as root before dropping to uid
    # 1000, whose volume holds `.tmp -> /etc`; `mkdir -p` made /etc/cron.weekly as root.
    # A service image with a shell, as the shim needs (the volinit image has none): the
    # test base, with the shim where `COPY --from` puts it.
    tag = uuid.uuid4().hex[:10]
    volume, container = f"volinit-test-shim-{tag}", f"volinit-test-shim-{tag}"
    try:
        assert docker("volume", "create", volume).returncode == 0
        for user, script in (("0:0", "chown 1000:1000 /v"), ("1000:1000", "ln -s /etc /v/.tmp")):
            setup = docker("run", "--rm", "--user", user, "-v", f"{volume}:/v", "--entrypoint", "sh",
                           base_image, "-c", script)
            assert setup.returncode == 0, setup.stderr
        run = docker("run", "--name", container, "--user", "0:0", "--network", "none",
                     "-v", f"{volume}:/app/cache", "-e", "TMPDIR=/app/cache/.tmp/cron.weekly",
                     "-v", f"{SHIM}:/usr/local/bin/volinit-entrypoint:ro",
                     "--entrypoint", "/usr/local/bin/volinit-entrypoint", base_image, "echo", "service ran")
        assert (run.returncode, run.stdout) == (73, ""), run.stderr
        assert run.stderr.splitlines() == [
            "volinit-entrypoint: error: TMPDIR=/app/cache/.tmp/cron.weekly: will not follow /app/cache/.tmp as "
            "uid:gid 0:0 (it is a symlink, and the shim follows none as root); /app/cache is owned by 1000:1000, "
            "mode drwxr-xr-x (point TMPDIR at the real path, or run volinit-entrypoint as the service's user)"]
        changed = docker("diff", container)
        assert changed.returncode == 0, changed.stderr
        assert [line for line in changed.stdout.splitlines() if "/etc" in line] == []
    finally:
        docker("rm", "-f", container)
        docker("volume", "rm", "-f", volume)


# --- lint ------------------------------------------------------------------------------


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        unavailable("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "--shell=sh", str(SHIM)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_shim_is_executable() -> None:
    assert SHIM.stat().st_mode & stat.S_IXOTH, "COPY --from keeps the mode: it must be executable"
