"""Prune: remove entries below a directory that have not been modified for a while.

The orphans are what a killed job leaves in TMPDIR (seed 003: model downloads cut off by
`docker kill`). Rules: never the directory itself, never into another mount (told by mount
identity, see volinit.mounts), never through a symlink (a link is removed as a link),
never a `keep` match (nor anything below a kept directory), and entries that vanish under
us (another pruner) are fine.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import time
from typing import Callable, Iterable

from volinit.mounts import Mounts, volume_mounts
from volinit.walk import PROGRESS_EVERY, SKIP_MOUNT, Level, Skips, Traversal, os_error


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


class _Pruner(Traversal):
    """Remove old entries: one pruning process's settings and tallies."""

    ages = True

    def __init__(self, mounts: Mounts, cutoff: float, kept, dry_run: bool,
                 progress: Callable[[int], None] | None) -> None:
        super().__init__(mounts, progress)
        self.cutoff, self.kept, self.dry_run = cutoff, kept, dry_run

    def new_result(self) -> PruneResult:
        return PruneResult()

    def is_old(self, st: os.stat_result) -> bool:
        return st.st_mtime < self.cutoff

    def scan(self, lvl: Level, at_root: bool) -> tuple[str, int] | None:
        res = self.res
        cutoff, kept, dry_run, progress = self.cutoff, self.kept, self.dry_run, self.progress
        roots, root_inos = self.mounts.roots, self.mounts.root_inos
        fd, entries, pending = lvl.fd, lvl.entries, lvl.pending
        assert entries is not None
        unlink = os.unlink
        S_ISDIR = stat.S_ISDIR
        every = PROGRESS_EVERY
        seen = self.seen
        try:
            for entry in entries:
                seen += 1
                if progress is not None and not seen % every:
                    progress(seen)
                name = entry.name
                if kept is not None and kept(name):
                    res.kept += 1
                    lvl.left += 1
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if pending is None:
                        return name, entry.inode()
                    pending.append((name, entry.inode()))
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_ino in root_inos and (st.st_dev, st.st_ino) in roots:  # a file bind-mounted here
                    self.skip(SKIP_MOUNT, name)
                    lvl.left += 1
                    continue
                if S_ISDIR(st.st_mode) or st.st_mtime >= cutoff:  # a dir now: swapped since the listing
                    lvl.left += 1
                    continue
                if not dry_run:
                    try:
                        unlink(name, dir_fd=fd)
                    except FileNotFoundError:
                        continue
                    except IsADirectoryError:  # swapped for a dir since the stat: left
                        lvl.left += 1
                        continue
                    except OSError as exc:
                        raise os_error("cannot remove", self.path(name), exc) from None
                res.removed += 1
                res.bytes += st.st_size
        finally:
            self.seen = seen
        entries.close()  # type: ignore[attr-defined]
        lvl.entries = None
        return None

    def leave(self, lvl: Level, parent: Level) -> None:
        """rmdir a dir found empty whose own mtime was old before we pruned inside it."""
        if lvl.old and not lvl.left and self.remove_dir(parent.fd, lvl.name):
            return
        parent.left += 1

    def remove_dir(self, parent_fd: int, name: str) -> bool:
        """False when it was refilled meanwhile."""
        if not self.dry_run:
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except FileNotFoundError:
                return True  # another pruner's
            except OSError as exc:
                # refilled meanwhile, or swapped for a symlink or a file since it was listed
                # (EBUSY: a mount point, swapped in from a namespace where it is a plain dir)
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EBUSY):
                    return False
                raise os_error("cannot remove", self.path(name), exc) from None
        self.res.removed += 1
        return True

    def record(self) -> tuple:
        res = self.res
        return self.seen, res.removed, res.bytes, res.kept, res.skips.counts, res.skips.samples

    def merge(self, record: tuple) -> None:
        seen, removed, size, kept, counts, samples = record
        res = self.res
        self.seen += seen
        res.removed += removed
        res.bytes += size
        res.kept += kept
        res.skips.merge_counts(counts, samples)


def prune_dir(dir_fd: int, older_than: float, keep: Iterable[str] = (), *,
              dry_run: bool = False, now: float | None = None,
              progress: Callable[[int], None] | None = None,
              workers: int | None = None, parallel_after: int | None = None,
              mounts: Mounts | None = None) -> PruneResult:
    """Remove entries below dir_fd whose mtime is older than `older_than` seconds.

    A directory is removed only when it is empty after pruning and its own mtime, read
    before pruning inside it, was old. Any depth works, with a constant number of fds.
    `progress` gets the count of entries looked at, every PROGRESS_EVERY of them. A big
    tree is shared among `workers` forked processes (default: the usable CPUs), as
    chown_tree does. `mounts` are the mounts inside the volume (found when not given).
    """
    from volinit.parallel import walk_tree

    cutoff = (time.time() if now is None else now) - older_than
    if mounts is None:
        mounts = volume_mounts(dir_fd)
    pruner = _Pruner(mounts, cutoff, keep_matcher(keep), dry_run, progress)
    walk_tree(pruner, dir_fd, workers, parallel_after)
    return pruner.res
