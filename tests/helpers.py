"""Small helpers shared by the tests: run the CLI as a user would, build trees, read owners."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """What a user sees of one run: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("volinit: error: ")]


def volinit(*args: str, env: dict[str, str] | None = None, prefix: list[str] | tuple[str, ...] = (),
            timeout: float = 120) -> Result:
    """Run `python -m volinit ARGS` as a user would; a traceback is a bug whatever the exit code."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([*prefix, sys.executable, "-m", "volinit", *args], capture_output=True,
                          text=True, errors="replace", env=full_env, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1, 2), proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


def owners(root: Path) -> dict[str, tuple[int, int]]:
    """uid:gid of every entry below root (root included as "."), never following links."""
    found = {".": _owner(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            found[str(p.relative_to(root))] = _owner(p)
    return found


def _owner(p: Path) -> tuple[int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid


def ctimes(root: Path) -> dict[str, int]:
    out = {".": os.lstat(root).st_ctime_ns}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = os.lstat(p).st_ctime_ns
    return out


def age(path: Path, days: float) -> None:
    """Set a path's mtime (not following links) `days` into the past."""
    import time

    t = time.time() - days * 86400
    os.utime(path, (t, t), follow_symlinks=False)


def make_chain(top: Path, depth: int, *, file_per_level: str | None = None, file_at_bottom: str | None = None,
               mtime: float | None = None, name: str = "d") -> None:
    """A chain top/d/d/.../d of `depth` dirs (named `name`) below the existing dir top, fd by
    fd (the path outgrows PATH_MAX), with an empty file in each level or at the bottom;
    mtime dates them."""

    def touch(name: str, dir_fd: int) -> None:
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dir_fd))
        if mtime is not None:
            os.utime(name, (mtime, mtime), dir_fd=dir_fd)

    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            if file_per_level is not None:
                touch(file_per_level, fd)
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if file_at_bottom is not None:
            touch(file_at_bottom, fd)
    finally:
        os.close(fd)


def remove_chain(top: Path, name: str = "d") -> None:
    """Remove a deep chain top/d/d/d/... without recursion (rmtree overflows at 1000 levels)."""
    stack = [os.open(top, os.O_RDONLY)]
    while True:
        try:
            stack.append(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=stack[-1]))
        except FileNotFoundError:
            break
    while len(stack) > 1:
        child = stack.pop()
        for entry in os.listdir(child):
            os.unlink(entry, dir_fd=child)
        os.close(child)
        os.rmdir(name, dir_fd=stack[-1])
    os.close(stack[0])
