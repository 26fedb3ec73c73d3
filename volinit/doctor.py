"""`volinit doctor`: say, before the service starts, why its temp and cache dirs will fail.

Run as the service user, in the service's container. Each check mirrors a failure the seed
incidents lived through:
- Python's tempfile finds no usable temp dir ("No usable temporary directory found in
  ['/tmp', '/var/tmp', '/usr/tmp', '/app']": a non-root service with `read_only: true`);
- a cache variable points where the user cannot write (caches aimed into a read-only
  site-packages);
- too little free space where temp files go (an 8 MB tmpfs against a 64M need);
- a dir whose data must persist lives on the container's own layer or a tmpfs.

Stdlib only, and nothing heavy: a container start pays for every import.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from volinit.errors import UsageError, one_line

# where the mounts are read from; a test points this at a sample file
MOUNTINFO = "/proc/self/mountinfo"
# tempfile's fixed candidates after TMPDIR, TEMP and TMP (POSIX), before the working dir
TEMPFILE_FALLBACKS: tuple[str, ...] = ("/tmp", "/var/tmp", "/usr/tmp")
CACHE_VARIABLES = ("TMPDIR", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME")
PACKAGE_DIRS = ("site-packages", "dist-packages")
# filesystems whose contents die with the container (or the host's next boot)
EPHEMERAL_FSTYPES = ("tmpfs", "ramfs")

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)
_FIX_CREATE = "run the volinit init service before this one, or start it through volinit-entrypoint"


class Check(NamedTuple):
    """One row of the report; a problem also carries a headline and the fix."""

    check: str  # what was checked: "temp dir", a variable's name, "free space", "persistence"
    where: str
    ok: bool
    detail: str  # what was found, or why it is a problem
    what: str = ""
    fix: str = ""


class Mount(NamedTuple):
    point: str
    fstype: str
    source: str


MAX_SIZE = 1 << 60  # 1 EiB


def parse_size(text: str, flag: str = "--min-free") -> int:
    """Bytes in `text`: 1024, 512k, 64M, 1G, 2T, optionally with B or iB (all powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if match is None or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
        raise UsageError(flag, repr(text), "not a size",
                         "a number with an optional unit k, M, G or T, e.g. 64M or 1G")
    number, unit = match.group(1), match.group(2).lower()
    if "." in number and not unit:
        raise UsageError(flag, repr(text), "a fraction of a byte", "use whole bytes, or a unit: 1.5G")
    too_big = UsageError(flag, repr(text), "larger than any disk (over 1 EiB)", "give the free space needed, e.g. 2G")
    if len(number) > 24:  # before any arithmetic: a float overflow, or past int()'s digit limit
        raise too_big
    size = int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]
    if size > MAX_SIZE:
        raise too_big
    return size


def format_size(size: int) -> str:
    """1.5G, 64M, 512k, 100B: short and in the units parse_size reads."""
    for unit, scale in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{unit}" if value >= 100 or value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"


def run(paths: Sequence[str], min_free: int | None, as_json: bool) -> int:
    """Check everything, report on stdout (a table, or one JSON document); 1 on any problem."""
    try:
        os.getcwd()  # tempfile's last candidate, and the base of every relative path below
    except FileNotFoundError:
        raise UsageError("the working directory was removed", "", "", "cd to an existing directory and rerun") from None
    env = os.environ
    mounts, mounts_error = read_mounts(MOUNTINFO)
    tempdir, temp_check = check_tempfile_dir(env)
    checks = [temp_check]
    checks += [check_cache_dir(variable, path) for variable, path in cache_dirs(env)]
    checks.append(check_free_space(tempdir, min_free, mounts))
    checks += [check_persistent(path, mounts, mounts_error) for path in paths]
    if as_json:
        print_json(checks, tempdir)
    else:
        print_table(checks)
    return 0 if all(check.ok for check in checks) else 1


# --- the checks ------------------------------------------------------------------------


def tempfile_candidates(env: Mapping[str, str]) -> list[str]:
    """The dirs tempfile.gettempdir() tries, in order (as tempfile._candidate_tempdir_list).

    gettempdir() itself is no use here: it caches its answer and raises on failure.
    """
    candidates = [env[name] for name in ("TMPDIR", "TEMP", "TMP") if env.get(name)]
    candidates += TEMPFILE_FALLBACKS
    try:
        candidates.append(os.getcwd())
    except OSError:
        candidates.append(os.curdir)
    return candidates


def check_tempfile_dir(env: Mapping[str, str]) -> tuple[str | None, Check]:
    """The dir tempfile would pick, and a row saying which candidates failed and why."""
    candidates = tempfile_candidates(env)
    failures: list[str] = []
    for candidate in candidates:
        path = candidate if candidate == os.curdir else os.path.abspath(candidate)
        why = write_probe(path)
        if why is None:
            note = f"Python's tempfile will use it (after {'; '.join(failures)})" if failures \
                else "Python's tempfile will use it"
            return path, Check("temp dir", path, True, note)
        failures.append(f"{path}: {why}")
    return None, Check(
        "temp dir", str(candidates), False, "; ".join(failures),
        what="no usable temp dir for Python's tempfile",
        fix="set TMPDIR to a dir on a volume and run the volinit init service "
            "(or start the service through volinit-entrypoint)",
    )


def cache_dirs(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(variable, dir) for each cache variable that is set, then each dir in VOLINIT_DIRS."""
    named = [(variable, env[variable]) for variable in CACHE_VARIABLES if env.get(variable)]
    extra = re.split(r"[\s:]+", env.get("VOLINIT_DIRS", ""))
    return named + [("VOLINIT_DIRS", path) for path in extra if path]


def check_cache_dir(variable: str, path: str) -> Check:
    """The dir `variable` names exists and the current user can create files in it."""
    where = os.path.abspath(path)
    user = f"{os.geteuid()}:{os.getegid()}"
    if os.path.isdir(where):
        why = write_probe(where)
        if why is None:
            return Check(variable, where, True, "a writable dir")
        detail = f"uid:gid {user} cannot create a file in it ({why}; {describe_owner(where)})"
        culprit = where
    else:
        culprit = nearest_existing(where)
        if os.path.lexists(where) or not os.path.isdir(culprit):
            detail = f"{culprit} is not a directory"
            fix = f"point {variable} at a directory, or move {culprit} out of the way"
            return Check(variable, where, False, detail, what=f"{variable} is not a writable dir", fix=fix)
        why = write_probe(culprit)
        if why is None:
            detail = f"it does not exist (uid:gid {user} could create it in {culprit})"
        else:
            detail = (f"it does not exist, and uid:gid {user} cannot create it in {culprit} "
                      f"({why}; {describe_owner(culprit)})")
    package_dir = next((part for part in PACKAGE_DIRS if part in where.split(os.sep)), None)
    if package_dir:
        detail += f"; it is inside {package_dir}, the Python install, which the image keeps read-only"
        fix = f"point {variable} at a dir on a volume, outside the Python install, and {_FIX_CREATE}"
    elif why is None:
        fix = _FIX_CREATE
    elif "read-only" in why.lower():
        fix = f"mount a volume at {where}, or point {variable} at a dir on one"
    else:
        fix = f"{_FIX_CREATE}; for an old volume: volinit repair VOLUME --owner {user}"
    return Check(variable, where, False, detail, what=f"{variable} is not a writable dir", fix=fix)


def check_free_space(tempdir: str | None, min_free: int | None, mounts: list[Mount]) -> Check:
    """Space left where temp files go, against min_free when one is given."""
    if tempdir is None:
        ok = min_free is None
        return Check("free space", "-", ok, "no temp dir to measure",
                     what="" if ok else "cannot check free space: no usable temp dir",
                     fix="" if ok else "fix the temp dir first (see above)")
    st = os.statvfs(tempdir)
    free = st.f_bavail * st.f_frsize
    mount = mount_of(os.path.realpath(tempdir), mounts)
    on = f" on {mount.fstype} at {mount.point}" if mount else ""
    if min_free is None:
        return Check("free space", tempdir, True, f"{format_size(free)} free{on} (no --min-free given)")
    if free >= min_free:
        return Check("free space", tempdir, True, f"{format_size(free)} free{on}, {format_size(min_free)} needed")
    if mount and mount.fstype in EPHEMERAL_FSTYPES:
        fix = f"give the tmpfs at {mount.point} at least {format_size(min_free)} (tmpfs size=), " \
              "or set TMPDIR to a dir on a volume with room"
    else:
        fix = f"free space there, or set TMPDIR to a dir on a volume with {format_size(min_free)} free"
    return Check("free space", tempdir, False, f"{format_size(free)} free{on}, {format_size(min_free)} needed",
                 what="too little free space for temp files", fix=fix)


def check_persistent(path: str, mounts: list[Mount], mounts_error: str | None) -> Check:
    """A dir whose data must outlive the container is on a mounted volume."""
    where = os.path.realpath(path)
    shown = where if where == os.path.abspath(path) else f"{path} ({where})"
    if mounts_error is not None:
        return Check("persistence", shown, False, f"cannot read the mounts: {mounts_error}",
                     what="cannot tell whether the dir is on a volume",
                     fix="run volinit doctor inside the service's container (Linux)")
    mount = mount_of(where, mounts)
    if mount is None or mount.point == "/":
        fstype = mount.fstype if mount else "unknown"
        detail = (f"it is on / ({fstype}), the container's own writable layer: lost when the container "
                  "is recreated (a new image or config), and not shared between replicas")
    elif mount.fstype in EPHEMERAL_FSTYPES:
        detail = (f"it is on a {mount.fstype} mounted at {mount.point}: lost when the container stops, "
                  "and not shared between replicas")
    else:
        return Check("persistence", shown, True, f"on a {mount.fstype} volume mounted at {mount.point}")
    return Check("persistence", shown, False, detail,
                 what="data will not outlive the container", fix=f"mount a volume at {where}")


# --- helpers ---------------------------------------------------------------------------


def write_probe(directory: str) -> str | None:
    """Create, write and remove a file in directory, as tempfile does: None, or why not.

    os.access would answer from the mode bits, which root bypasses and a read-only mount
    overrides; and a full disk lets the create through but not the write.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(10):
        name = os.path.join(directory, f".volinit-doctor-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            fd = os.open(name, flags, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            return exc.strerror or str(exc)
        try:
            os.write(fd, b"blat")
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            os.close(fd)
            os.unlink(name)
        return None
    return "every probe name was taken"


def nearest_existing(path: str) -> str:
    """path, or its closest ancestor that exists."""
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def describe_owner(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror}"
    return f"{path} is owned by {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:04o}"


def read_mounts(mountinfo: str) -> tuple[list[Mount], str | None]:
    """The mounts in a mountinfo file (proc(5)), in mount order; or why it cannot be read."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
            return [mount for line in lines if (mount := parse_mountinfo_line(line))], None
    except OSError as exc:
        return [], f"{mountinfo}: {exc.strerror}"


def parse_mountinfo_line(line: str) -> Mount | None:
    # 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    fields = line.split()
    try:
        separator = fields.index("-", 6)
        return Mount(unescape(fields[4]), fields[separator + 1], unescape(fields[separator + 2]))
    except (ValueError, IndexError):
        return None


def unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for a space, \\011, \\012, \\134)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount holding path: the longest mount point above it; of equals, the last (on top)."""
    best: Mount | None = None
    for mount in mounts:
        if path == mount.point or path.startswith(mount.point.rstrip("/") + "/"):
            if best is None or len(mount.point) >= len(best.point):
                best = mount
    return best


# --- output ----------------------------------------------------------------------------


def print_table(checks: list[Check]) -> None:
    problems = [check for check in checks if not check.ok]
    print(f"volinit doctor as uid:gid {os.geteuid()}:{os.getegid()}: "
          + (f"{len(problems)} problem{'s' if len(problems) != 1 else ''}" if problems else "healthy"))
    # paths come from the environment and may hold a newline: one row stays one line
    rows = [("CHECK", "WHERE", "RESULT")]
    rows += [(check.check, one_line(check.where), one_line(("ok: " if check.ok else "PROBLEM: ") + check.detail))
             for check in checks]
    width_check = max(len(row[0]) for row in rows)
    width_where = max(len(row[1]) for row in rows)
    for name, where, result in rows:
        print(f"{name:<{width_check}}  {where:<{width_where}}  {result}")
    for number, check in enumerate(problems, 1):
        what, where, why, fix = (one_line(text) for text in (check.what, check.where, check.detail, check.fix))
        print(f"\n{number}. {what}: {where}\n   why: {why}\n   fix: {fix}")
    sys.stdout.flush()


def print_json(checks: list[Check], tempdir: str | None) -> None:
    import json

    document = {
        "healthy": all(check.ok for check in checks),
        "uid": os.geteuid(),
        "gid": os.getegid(),
        "tempdir": tempdir,
        "checks": [{"check": c.check, "where": c.where, "ok": c.ok, "detail": c.detail} for c in checks],
        "findings": [{"check": c.check, "what": c.what, "where": c.where, "why": c.detail, "fix": c.fix}
                     for c in checks if not c.ok],
    }
    print(json.dumps(document, indent=2))
