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
from collections import deque
from typing import Callable, Iterable

from volinit.walk import PROGRESS_EVERY, SKIP_MOUNT, Skips, dup_dir, join, list_dir, open_subdir, os_error


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


class _Pruner:
    """One pruning process's settings and tallies: the parent's, or a forked worker's."""

    def __init__(self, cutoff: float, kept, dev: int, dry_run: bool,
                 progress: Callable[[int], None] | None) -> None:
        self.cutoff, self.kept, self.dev, self.dry_run = cutoff, kept, dev, dry_run
        self.progress = progress
        self.seen = 0
        self.res = PruneResult()
        self.room = 0  # how many more subdirs walk() may collect
        self.lefts: list[tuple[int, int]] = []  # a worker's (task, entries left in its dir)

    def walk(self, top_fd: int, top: str, collect: list | None = None) -> int:
        """Prune below the open dir top_fd (at relative path top); return the entries left in it.

        With `collect`, subdirectories of top itself (up to self.room of them) are opened and
        appended to it as (fd, path, name, was old), not pruned, and not counted as left.
        """
        res = self.res
        cutoff, kept, dev, dry_run, progress = self.cutoff, self.kept, self.dev, self.dry_run, self.progress
        unlink = os.unlink
        S_ISDIR = stat.S_ISDIR
        every = PROGRESS_EVERY
        seen = self.seen
        left_in_top = 0

        # Frames: [fd, entries, path, name in parent, was old, entries left]
        stack: list[list] = []
        top_dup = dup_dir(top_fd, top)
        stack.append([top_dup, list_dir(top_dup, top), top, "", False, 0])
        try:
            while stack:
                frame = stack[-1]
                fd, entries, base = frame[0], frame[1], frame[2]
                descended = False
                for entry in entries:
                    seen += 1
                    if progress is not None and not seen % every:
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
                        if collect is not None and fd == top_dup and self.room > 0:
                            self.room -= 1
                            collect.append((sub_fd, join(base, name), name, st.st_mtime < cutoff))
                            continue
                        stack.append([sub_fd, list_dir(sub_fd, join(base, name)), join(base, name), name,
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
                        except IsADirectoryError:  # swapped for a dir since the stat: left
                            frame[5] += 1
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
                    left_in_top = frame[5]
                    break
                parent = stack[-1]
                _, _, path, name, was_old, left = frame
                if not was_old or left:
                    parent[5] += 1
                    continue
                if not self.remove_dir(parent[0], name, path):
                    parent[5] += 1
        except OSError as exc:  # reading a listing failed (EIO, say): the dir being read
            raise os_error("cannot read", stack[-1][2] if stack else top, exc) from None
        finally:
            self.seen = seen
            for frame in stack:
                frame[1].close()
                os.close(frame[0])
        return left_in_top

    def remove_dir(self, parent_fd: int, name: str, path: str) -> bool:
        """rmdir a dir found empty and old; False when it was refilled meanwhile."""
        if not self.dry_run:
            try:
                os.rmdir(name, dir_fd=parent_fd)
            except FileNotFoundError:
                return True  # another pruner's
            except OSError as exc:
                # refilled meanwhile, or swapped for a symlink or a file since it was listed
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    return False
                raise os_error("cannot remove", path, exc) from None
        self.res.removed += 1
        return True


# As for the chown walk (see walk.PARALLEL_AFTER): the parent prunes the top breadth first,
# alone, then forked workers take the subtrees left. Deleting waits on the filesystem's
# journal more than on the CPU, and two processes overlap those waits.
PARALLEL_AFTER = 5000
MAX_DIRS_OPEN = 4096


def prune_dir(dir_fd: int, older_than: float, keep: Iterable[str] = (), *,
              dry_run: bool = False, now: float | None = None,
              progress: Callable[[int], None] | None = None,
              workers: int | None = None, parallel_after: int = PARALLEL_AFTER) -> PruneResult:
    """Remove entries below dir_fd whose mtime is older than `older_than` seconds.

    A directory is removed only when it is empty after pruning and its own mtime, read
    before pruning inside it, was old. Iterative, so any depth works. `progress` gets
    the count of entries looked at, every PROGRESS_EVERY of them. A big tree is shared
    among `workers` forked processes (default: the usable CPUs), as chown_tree does.
    """
    cutoff = (time.time() if now is None else now) - older_than
    pruner = _Pruner(cutoff, keep_matcher(keep), os.fstat(dir_fd).st_dev, dry_run, progress)
    if workers is None:
        from volinit.parallel import default_workers

        workers = default_workers()
    if workers < 2:
        pruner.walk(dir_fd, "")
        return pruner.res

    import resource

    # Dirs met breadth first, as [fd, path, name, parent's index, was old, entries left]:
    # their fds stay open until the end, when each is removed (children first) if it was
    # old and is empty. The top is never removed.
    nodes: list[list] = [[os.dup(dir_fd), "", "", -1, False, 0]]
    queue = deque([0])  # nodes whose contents are not pruned yet
    cap = max(4 * workers, min(MAX_DIRS_OPEN, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))
    try:
        while queue and (pruner.seen < parallel_after or len(queue) < 2 * workers):
            i = queue.popleft()
            found: list[tuple[int, str, str, bool]] = []
            pruner.room = cap - len(nodes)
            nodes[i][5] = pruner.walk(nodes[i][0], nodes[i][1], collect=found)
            for fd, path, name, was_old in found:
                nodes.append([fd, path, name, i, was_old, 0])
                queue.append(len(nodes) - 1)
        if queue:
            _prune_in_workers(pruner, nodes, list(queue), workers)
        for node in reversed(nodes[1:]):
            fd, path, name, parent, was_old, left = node
            os.close(fd)
            node[0] = -1
            if not was_old or left or not pruner.remove_dir(nodes[parent][0], name, path):
                nodes[parent][5] += 1
    finally:
        for node in nodes:
            if node[0] >= 0:
                os.close(node[0])
    return pruner.res


def _prune_in_workers(pruner: _Pruner, nodes: list[list], tasks: list[int], workers: int) -> None:
    """Prune below each task's dir in forked workers; set each one's entries left, add up tallies."""
    from volinit.parallel import NoWorkers, Pool

    mine, progress = pruner.res, pruner.progress
    done_before = pruner.seen

    def work(i: int) -> None:
        pruner.lefts.append((i, pruner.walk(nodes[i][0], nodes[i][1])))

    def result() -> tuple:
        res = pruner.res
        return res.removed, res.bytes, res.kept, res.skips.counts, res.skips.samples, pruner.lefts

    pool = Pool(min(workers, len(tasks)), work, result, progress, done_before)
    pruner.res, pruner.seen, pruner.progress = PruneResult(), 0, pool.publish  # each worker counts from nothing
    results: list | None
    try:
        results = pool.run(tasks)
    except NoWorkers:
        results = None
    finally:
        pruner.res, pruner.seen, pruner.progress = mine, done_before, progress
    if results is None:  # no fork allowed here: prune them all in this process
        for i in tasks:
            nodes[i][5] = pruner.walk(nodes[i][0], nodes[i][1])
        return
    for removed, size, kept, counts, samples, lefts in results:
        mine.removed += removed
        mine.bytes += size
        mine.kept += kept
        mine.skips.merge_counts(counts, samples)
        for i, left in lefts:
            nodes[i][5] = left
