"""Prune: remove entries below a directory that have not been modified for a while.

The orphans are what a killed job leaves in TMPDIR (seed 003: model downloads cut off by
`docker kill`). Rules: never the directory itself, never across a mount, never through a
symlink (a link is removed as a link), never a `keep` match (nor anything below a kept
directory), and entries that vanish under us (another pruner) are fine.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import time
from typing import Callable, Iterable

from volinit.walk import PROGRESS_EVERY, SKIP_MOUNT, Skips, join, open_subdir, os_error


class PruneResult:
    __slots__ = ("removed", "bytes", "kept", "skips")

    def __init__(self) -> None:  # a plain class: see walk.Skips
        self.removed = 0
        self.bytes = 0
        self.kept = 0  # entries matching a keep pattern
        self.skips = Skips()


def keep_matcher(globs: Iterable[str]):
    """A fast name -> bool for the keep globs (one compiled regex for all of them)."""
    globs = tuple(globs)
    if not globs:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match


def prune_dir(dir_fd: int, older_than: float, keep: Iterable[str] = (), *,
              dry_run: bool = False, now: float | None = None,
              progress: Callable[[int], None] | None = None) -> PruneResult:
    """Remove entries below dir_fd whose mtime is older than `older_than` seconds.

    A directory is removed only when it is empty after pruning and its own mtime, read
    before pruning inside it, was old. Iterative, so any depth works. `progress` gets
    the count of entries looked at, every PROGRESS_EVERY of them.
    """
    res = PruneResult()
    cutoff = (time.time() if now is None else now) - older_than
    kept = keep_matcher(keep)
    dev = os.fstat(dir_fd).st_dev
    unlink = os.unlink
    S_ISDIR = stat.S_ISDIR
    seen = 0

    # Frames: [fd, entries, path, name in parent, was old, entries left]
    stack: list[list] = []
    top = os.dup(dir_fd)
    stack.append([top, os.scandir(top), "", "", False, 0])
    try:
        while stack:
            frame = stack[-1]
            fd, entries, base = frame[0], frame[1], frame[2]
            descended = False
            for entry in entries:
                seen += 1
                if progress is not None and not seen % PROGRESS_EVERY:
                    progress(seen)
                name = entry.name
                if kept is not None and kept(name):
                    res.kept += 1
                    frame[5] += 1
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_dev != dev:
                    res.skips.add(SKIP_MOUNT, join(base, name))
                    frame[5] += 1
                    continue
                if S_ISDIR(st.st_mode):
                    try:
                        sub_fd, _ = open_subdir(fd, name, st)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    except OSError as exc:
                        if exc.errno == errno.ELOOP:
                            continue
                        raise os_error("cannot open", join(base, name), exc) from None
                    stack.append([sub_fd, os.scandir(sub_fd), join(base, name), name,
                                  st.st_mtime < cutoff, 0])
                    descended = True
                    break
                if st.st_mtime >= cutoff:
                    frame[5] += 1
                    continue
                if not dry_run:
                    try:
                        unlink(name, dir_fd=fd)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise os_error("cannot remove", join(base, name), exc) from None
                res.removed += 1
                res.bytes += st.st_size
            if descended:
                continue
            stack.pop()
            entries.close()
            os.close(fd)
            if not stack:
                break
            parent = stack[-1]
            _, _, path, name, was_old, left = frame
            if not was_old or left:
                parent[5] += 1
                continue
            if not dry_run:
                try:
                    os.rmdir(name, dir_fd=parent[0])
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # refilled meanwhile
                        parent[5] += 1
                        continue
                    raise os_error("cannot remove", path, exc) from None
            res.removed += 1
    finally:
        for frame in stack:
            frame[1].close()
            os.close(frame[0])
    return res
