"""Trees to measure on: built once per run, the same bytes for every tool.

A chown tree looks like a cache or data volume: nested directories holding 10-20 entries
each, about one entry in twenty a symlink. The links are relative (to a sibling, or
dangling), so a tool that follows links by mistake (`find -exec chown` does) still stays
inside the tree. There are no hard links: volinit skips those by default and chown -R
does not, which would make the work differ.

A prune tree looks like a TMPDIR after killed jobs: job dirs (a subdir inside, 16 entries
each), half of them with every entry 3 days old, half fresh, so every tool removes exactly
the old half and no rmdir meets a fresh file.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from dataclasses import dataclass

FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
LINK_EVERY = 20
OLD_AGE = 3 * 86400


@dataclass
class TreeInfo:
    files: int = 0
    links: int = 0
    dirs: int = 0
    old: int = 0  # entries older than a day (prune trees)

    @property
    def entries(self) -> int:
        return self.files + self.links + self.dirs


def build_chown_tree(root: str, files: int, seed: int = 1) -> TreeInfo:
    """Make root holding `files` non-directory entries (about 5% symlinks) in nested dirs."""
    rng = random.Random(seed)
    info = TreeInfo()
    # a dir is made only when its turn comes, so every dir holds files (no empty leaves)
    pending = deque([root])
    made = 0
    while made < files:
        path = pending.popleft()
        os.mkdir(path, 0o755)
        info.dirs += path != root
        fd = os.open(path, DIR_FLAGS)
        try:
            count = min(rng.randint(10, 20), files - made)
            for i in range(count):
                name = f"f{i:02d}.dat"
                if (made + i) % LINK_EVERY == LINK_EVERY - 1:
                    # a sibling, or (every other link) a name that does not exist
                    target = "f00.dat" if i % 2 else "gone.dat"
                    os.symlink(target, name, dir_fd=fd)
                    info.links += 1
                else:
                    os.close(os.open(name, FILE_FLAGS, 0o644, dir_fd=fd))
                    info.files += 1
            made += count
        finally:
            os.close(fd)
        pending.extend(f"{path}/d{j}" for j in range(rng.randint(2, 6)))
    return info


def build_prune_tree(root: str, entries: int, now: float | None = None) -> TreeInfo:
    """Make root holding `entries` entries in job dirs, every other job dir 3 days old."""
    info = TreeInfo()
    old = (now if now is not None else time.time()) - OLD_AGE
    os.mkdir(root)
    top = os.open(root, DIR_FLAGS)
    try:
        made = job = 0
        while made < entries:
            # a job dir: itself, 10 files, a subdir, 4 files in the subdir (fewer at the end)
            size = min(16, entries - made)
            is_old = job % 2 == 1
            name = f"job{job}"
            os.mkdir(name, 0o755, dir_fd=top)
            info.dirs += 1
            jfd = os.open(name, DIR_FLAGS, dir_fd=top)
            try:
                left = size - 1
                if left >= 2:
                    os.mkdir("sub", 0o755, dir_fd=jfd)
                    info.dirs += 1
                    left -= 1
                    sfd = os.open("sub", DIR_FLAGS, dir_fd=jfd)
                    try:
                        in_sub = min(4, left)
                        _make_files(sfd, in_sub, old if is_old else None)
                        info.files += in_sub
                        left -= in_sub
                        if is_old:
                            os.utime(sfd, (old, old))
                    finally:
                        os.close(sfd)
                _make_files(jfd, left, old if is_old else None)
                info.files += left
                if is_old:
                    os.utime(jfd, (old, old))
            finally:
                os.close(jfd)
            if is_old:
                info.old += size
            made += size
            job += 1
    finally:
        os.close(top)
    return info


def _make_files(dir_fd: int, count: int, mtime: float | None) -> None:
    for i in range(count):
        fd = os.open(f"t{i}.tmp", FILE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            os.write(fd, b"partial download\n")
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def count_entries(root: str) -> int:
    """Entries below root (root itself not counted), without following links."""
    total = 0
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as it:
            for entry in it:
                total += 1
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return total


def owners(root: str) -> set[tuple[int, int]]:
    """Every (uid, gid) found in the tree, root included, links themselves not followed."""
    st = os.lstat(root)
    seen = {(st.st_uid, st.st_gid)}
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                seen.add((st.st_uid, st.st_gid))
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
    return seen
