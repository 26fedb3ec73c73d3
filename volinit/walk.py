"""The safe walker: fd-relative, never following a symlink, never leaving the volume.

volinit runs as root over trees that a less-trusted user controls, so every step from the
volume root down goes through a directory fd opened with O_NOFOLLOW, and each opened
directory is checked to be the very inode that was listed (an entry swapped for a symlink
or another directory between listing and opening is skipped, not followed).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from stat import S_IFBLK, S_IFCHR, S_IFDIR
from typing import Callable, Iterator

from volinit.errors import OperationError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SKIP_SAMPLES = 5  # how many example paths a report keeps per reason
FORMAT_BITS = 0o170000  # st_mode & FORMAT_BITS is S_IFREG, S_IFDIR, ... (stat.S_IFMT() as a mask)

# Reasons an entry is left alone; each is counted and reported with a few paths.
SKIP_HARDLINK = "hard link"
SKIP_DEVICE = "device node"
SKIP_MOUNT = "other filesystem"
SKIP_VANISHED = "changed during walk"
SKIP_EXCLUDED = "excluded"

# Left to the filesystem's own tools: e2fsck wants lost+found as it made it.
ROOT_EXCLUDES = frozenset({"lost+found"})


# The result types below are plain classes, not dataclasses: @dataclass generates and
# compiles code at import, about 1 ms a class, paid again at every container start.


class Skips:
    """Entries left alone: a count per reason and the first few paths."""

    __slots__ = ("counts", "samples")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, reason: str, path: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.samples) < SKIP_SAMPLES:
            self.samples.append(f"{path} ({reason})")

    def merge(self, other: Skips, prefix: str = "") -> None:
        """Add another walk's skips, its sample paths placed under prefix."""
        self.merge_counts(other.counts, other.samples, prefix)

    def merge_counts(self, counts: dict[str, int], samples: list[str], prefix: str = "") -> None:
        """Add skips as a forked worker sends them back: counts by reason, sample paths."""
        for reason, n in counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        room = SKIP_SAMPLES - len(self.samples)
        self.samples.extend(prefix + s for s in samples[:max(room, 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def os_error(what: str, where: str, exc: OSError) -> OperationError:
    """An OSError as a user-facing error whose fix names the likely cause."""
    fixes = {
        errno.EROFS: "the volume is mounted read-only; mount it read-write for the volinit service",
        errno.EPERM: "volinit needs root with CAP_CHOWN and CAP_FOWNER: cap_add: [CHOWN, FOWNER, DAC_OVERRIDE]",
        errno.EACCES: "volinit needs root with CAP_DAC_OVERRIDE: cap_add: [CHOWN, FOWNER, DAC_OVERRIDE]",
        errno.ENOSPC: "the filesystem is full; free space or grow the volume",
        errno.EDQUOT: "the disk quota is exhausted; free space or raise the quota",
        errno.ENOENT: "mount the volume at this path (compose volumes:) or fix the path in the spec",
        errno.ENOTDIR: "a volume path must be a directory",
        errno.ELOOP: "volinit never follows symlinks; name the real directory instead",
        errno.EMFILE: "raise the open-file limit (ulimits: nofile) for the volinit service",
    }
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ELOOP:
        why = "is a symlink"
    return OperationError(what, where, why, fixes.get(exc.errno or 0, ""))


def open_volume(path: str) -> int:
    """Open an absolute directory path component by component, refusing symlinks."""
    fd = os.open("/", DIR_FLAGS)
    try:
        for name in [p for p in path.split("/") if p]:
            try:
                nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and is_symlink(fd, name):
                    exc = OSError(errno.ELOOP, "is a symlink")
                raise os_error("cannot open volume", path, exc) from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def is_symlink(dir_fd: int, name: str) -> bool:
    """O_DIRECTORY|O_NOFOLLOW says ENOTDIR for a symlink; tell the user which it was."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_subdir(parent_fd: int, name: str, expect: os.stat_result | None = None) -> tuple[int, os.stat_result]:
    """Open parent/name as a directory without following a symlink there.

    With `expect`, the opened inode must be the one that was listed; otherwise the entry
    was swapped under us and FileNotFoundError says "gone" to the caller.
    """
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        st = os.fstat(fd)
        if expect is not None and (st.st_ino, st.st_dev) != (expect.st_ino, expect.st_dev):
            raise FileNotFoundError(errno.ENOENT, "replaced during walk", name)
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def list_dir(fd: int, path: str) -> Iterator[os.DirEntry[str]]:
    """os.scandir on an fd we own. On failure (EMFILE, say) the fd is closed and the error
    is one for the user: scandir dups the fd, so it can hit the open-file limit that the
    open before it just missed."""
    try:
        return os.scandir(fd)
    except OSError as exc:
        os.close(fd)
        raise os_error("cannot list", path, exc) from None


def dup_dir(fd: int, path: str) -> int:
    try:
        return os.dup(fd)
    except OSError as exc:
        raise os_error("cannot open", path, exc) from None


def join(base: str, name: str) -> str:
    return name if not base else f"{base}/{name}"


class ChownResult:
    __slots__ = ("entries", "changed", "skips")

    def __init__(self) -> None:
        self.entries = 0  # entries looked at below the root
        self.changed = 0
        self.skips = Skips()


# The parent walks the top of a tree breadth first, alone, until it has seen this many
# entries; if the tree goes on, workers take the subtrees it has opened so far. Below it,
# forking costs more than it saves.
PARALLEL_AFTER = 5000
MAX_TASKS = 4096  # subtrees kept open for the workers at most (fds); past it they are walked in place
PROGRESS_EVERY = 1024  # entries between progress calls (a worker also checks its parent is alive)


class _Chowner:
    """One walking process's settings and tallies: the parent's, or a forked worker's."""

    def __init__(self, dev: int, uid: int, gid: int, hardlinks: str, dry_run: bool,
                 progress: Callable[[int], None] | None) -> None:
        self.dev, self.uid, self.gid = dev, uid, gid
        self.chown_links = hardlinks == "chown"
        self.dry_run = dry_run
        self.progress = progress
        self.res = ChownResult()
        self.max_tasks = MAX_TASKS

    def open_dir(self, parent_fd: int, entry: os.DirEntry[str], path: str) -> int:
        """Open a listed directory, check it, give it the owner: its fd, or -1 when skipped.

        No stat before the open: O_NOFOLLOW refuses a symlink swapped in, and the opened
        inode must be the listed one (d_ino), else the name was replaced under us. The
        fchown goes through the fd, to the inode checked, whatever the name is by now.
        """
        skips = self.res.skips
        try:
            fd = os.open(entry.name, DIR_FLAGS, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError):
            skips.add(SKIP_VANISHED, path)
            return -1
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a symlink
                skips.add(SKIP_VANISHED, path)
                return -1
            raise os_error("cannot open", path, exc) from None
        try:
            st = os.fstat(fd)
            if st.st_dev != self.dev:
                skips.add(SKIP_MOUNT, path)
                os.close(fd)
                return -1
            if st.st_ino != entry.inode() and not _same_inode(parent_fd, entry.name, st):
                skips.add(SKIP_VANISHED, path)
                os.close(fd)
                return -1
            if st.st_uid != self.uid or st.st_gid != self.gid:
                self.res.changed += 1
                if not self.dry_run:
                    try:
                        os.fchown(fd, self.uid, self.gid)
                    except OSError as exc:
                        raise os_error("cannot change owner of", path, exc) from None
            return fd
        except BaseException:
            os.close(fd)
            raise

    def walk(self, top_fd: int, top: str, collect: deque[tuple[int, str]] | None = None) -> None:
        """Fix every entry below the open directory top_fd (at relative path top), depth first.

        With `collect`, the subdirectories of top itself are opened, fixed and appended to
        it as (fd, path) for later, not walked (once it holds MAX_TASKS, the rest are).
        """
        res = self.res
        skips = res.skips
        dev, uid, gid = self.dev, self.uid, self.gid
        chown_links, dry_run, progress = self.chown_links, self.dry_run, self.progress
        lchown = os.chown
        every = PROGRESS_EVERY
        seen = res.entries

        # The stack holds (fd, entries iterator, relative path); the fds are ours to close.
        stack: list[tuple[int, Iterator[os.DirEntry[str]], str]] = []
        top_dup = dup_dir(top_fd, top)
        stack.append((top_dup, list_dir(top_dup, top), top))
        try:
            while stack:
                fd, entries, base = stack[-1]
                descended = False
                for entry in entries:
                    seen += 1
                    if progress is not None and not seen % every:
                        progress(seen)
                    name = entry.name
                    if not base and name in ROOT_EXCLUDES:
                        skips.add(SKIP_EXCLUDED, name)
                        continue
                    # d_type from the listing: no syscall yet
                    if entry.is_dir(follow_symlinks=False):
                        path = join(base, name)
                        sub_fd = self.open_dir(fd, entry, path)
                        if sub_fd < 0:
                            continue
                        if collect is not None and fd == top_dup and len(collect) < self.max_tasks:
                            collect.append((sub_fd, path))
                            continue
                        stack.append((sub_fd, list_dir(sub_fd, path), path))
                        descended = True
                        break
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        skips.add(SKIP_VANISHED, join(base, name))
                        continue
                    if st.st_dev != dev:
                        skips.add(SKIP_MOUNT, join(base, name))
                        continue
                    kind = st.st_mode & FORMAT_BITS
                    # any non-directory can be hard-linked in from outside where
                    # fs.protected_hardlinks is off: a FIFO or a socket as well as a file
                    if st.st_nlink > 1 and not chown_links and kind != S_IFDIR:
                        skips.add(SKIP_HARDLINK, join(base, name))
                        continue
                    if kind == S_IFCHR or kind == S_IFBLK:
                        skips.add(SKIP_DEVICE, join(base, name))
                        continue
                    elif kind == S_IFDIR:  # listed as something else: swapped since
                        skips.add(SKIP_VANISHED, join(base, name))
                        continue
                    if st.st_uid != uid or st.st_gid != gid:
                        if dry_run:
                            res.changed += 1
                            continue
                        try:
                            lchown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                            res.changed += 1
                        except FileNotFoundError:
                            skips.add(SKIP_VANISHED, join(base, name))
                        except OSError as exc:
                            raise os_error("cannot change owner of", join(base, name), exc) from None
                if not descended:
                    stack.pop()
                    entries.close()  # type: ignore[attr-defined]
                    os.close(fd)
        except OSError as exc:  # reading a listing failed (EIO, say): the dir being read
            raise os_error("cannot read", stack[-1][2] if stack else top, exc) from None
        finally:
            res.entries = seen
            for fd, entries, _ in stack:
                entries.close()  # type: ignore[attr-defined]
                os.close(fd)


def _same_inode(parent_fd: int, name: str, opened: os.stat_result) -> bool:
    """Does parent/name still name the opened inode? For when d_ino and st_ino disagree.

    Some filesystems (overlayfs without xino) list a directory with another inode number
    than stat gives it; stat and fstat always agree.
    """
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == (opened.st_ino, opened.st_dev)


def chown_tree(root_fd: int, root_st: os.stat_result, uid: int, gid: int, *,
               hardlinks: str = "skip", dry_run: bool = False,
               progress: Callable[[int], None] | None = None,
               workers: int | None = None, parallel_after: int = PARALLEL_AFTER) -> ChownResult:
    """Give every entry below the root (not the root itself) owner uid:gid.

    Changes only entries whose owner differs; never follows symlinks (a link is changed
    itself), stays on the root's filesystem, leaves device nodes and (unless hardlinks is
    "chown") multiply-linked non-directories alone. The caller fixes the root afterwards, so
    an interrupted walk leaves the root wrong and the next run walks again.

    A big tree is shared among `workers` forked processes (default: the usable CPUs): the
    parent walks breadth first until it has seen `parallel_after` entries, then the workers
    walk the subtrees it has opened. A worker's failure fails the walk.
    """
    walker = _Chowner(root_st.st_dev, uid, gid, hardlinks, dry_run, progress)
    if workers is None:
        from volinit.parallel import default_workers

        workers = default_workers()
    if workers < 2:
        walker.walk(root_fd, "")
        return walker.res
    # the pending subtrees hold an fd each: stay well inside the open-file limit
    import resource

    walker.max_tasks = max(2 * workers, min(MAX_TASKS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))

    # Breadth first, so the subtrees left when the parent stops are many and alike in size:
    # a queue of opened and fixed dirs whose contents are still to walk.
    pending = deque([(os.dup(root_fd), "")])
    try:
        while pending and (walker.res.entries < parallel_after or len(pending) < 2 * workers):
            fd, path = pending.popleft()
            try:
                walker.walk(fd, path, collect=pending)
            finally:
                os.close(fd)
        if pending:
            _walk_in_workers(walker, list(pending), workers, progress)
    finally:
        for fd, _ in pending:
            os.close(fd)
    return walker.res


def _walk_in_workers(walker: _Chowner, tasks: list[tuple[int, str]], workers: int,
                     progress: Callable[[int], None] | None) -> None:
    """Walk each (fd, path) subtree in forked workers; add their tallies to the walker's."""
    from volinit.parallel import NoWorkers, Pool

    mine = walker.res
    done_before = mine.entries

    def work(task: tuple[int, str]) -> None:
        walker.walk(*task)

    def result() -> tuple:
        res = walker.res
        return res.entries, res.changed, res.skips.counts, res.skips.samples

    pool = Pool(min(workers, len(tasks)), work, result, progress, done_before)
    walker.res = ChownResult()  # each worker counts from nothing
    walker.progress = pool.publish
    results: list | None
    try:
        results = pool.run(tasks)
    except NoWorkers:
        results = None
    finally:
        walker.res, walker.progress = mine, progress
    if results is None:  # no fork allowed here (a pids limit): walk them all in this process
        for task in tasks:
            walker.walk(*task)
        return
    for entries, changed, counts, samples in results:
        mine.entries += entries
        mine.changed += changed
        mine.skips.merge_counts(counts, samples)


def ensure_dir(root_fd: int, rel: str, uid: int, gid: int, mode: int | None, *,
               set_owner: bool, dry_run: bool) -> tuple[list[str], bool]:
    """Create rel (and missing parents) inside the volume, refusing symlinks on the way.

    Returns (the relative paths created, whether the final dir's owner or mode changed).
    Created dirs always get uid:gid; an existing final dir gets them when set_owner.
    """
    created: list[str] = []
    changed = False
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            path = "/".join(parts[: i + 1])
            want = (mode if mode is not None else 0o755) if last else 0o755
            made = False
            try:
                nfd, st = open_subdir(fd, name)
            except FileNotFoundError:
                if dry_run:
                    created.extend("/".join(parts[: j + 1]) for j in range(i, len(parts)))
                    return created, changed
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)  # owner and mode are set on the fd below
                    made = True
                except FileExistsError:
                    pass  # another run made it first
                except OSError as exc:
                    raise os_error("cannot create", path, exc) from None
                try:
                    nfd, st = open_subdir(fd, name)
                except OSError as exc:
                    raise os_error("cannot open", path, exc) from None
            except OSError as exc:
                why = None
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    why = "is a symlink" if is_symlink(fd, name) else "exists and is not a directory"
                if why:
                    raise OperationError("cannot create", path, why,
                                         "move it out of the way; volinit will not replace it") from None
                raise os_error("cannot open", path, exc) from None
            os.close(fd)
            fd = nfd
            if made:
                created.append(path)
            try:
                if made or (last and set_owner and (st.st_uid, st.st_gid) != (uid, gid)):
                    changed = changed or not made
                    if not dry_run:
                        os.fchown(fd, uid, gid)
                if made or (last and mode is not None and stat.S_IMODE(st.st_mode) != want):
                    changed = changed or not made
                    if not dry_run:
                        os.fchmod(fd, want)
            except OSError as exc:
                raise os_error("cannot set owner or mode of", path, exc) from None
        return created, changed
    finally:
        os.close(fd)


def open_existing_dir(root_fd: int, rel: str) -> int | None:
    """An fd for rel inside the volume, or None when it does not exist yet."""
    fd = os.dup(root_fd)
    try:
        for name in rel.split("/"):
            try:
                nfd, _ = open_subdir(fd, name)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise os_error("cannot open", rel, exc) from None
            os.close(fd)
            fd = nfd
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)
