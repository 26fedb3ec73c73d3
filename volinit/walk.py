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
from stat import S_IFBLK, S_IFCHR, S_IFDIR
from typing import Any, Callable, Iterator

from volinit.errors import OperationError
from volinit.mounts import Mounts, volume_mounts

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SKIP_SAMPLES = 5  # how many example paths a report keeps per reason
FORMAT_BITS = 0o170000  # st_mode & FORMAT_BITS is S_IFREG, S_IFDIR, ... (stat.S_IFMT() as a mask)

# Reasons an entry is left alone; each is counted and reported with a few paths.
SKIP_HARDLINK = "hard link"
SKIP_DEVICE = "device node"
SKIP_MOUNT = "another mount"
SKIP_VANISHED = "changed during walk"  # renamed or replaced: the walk may have missed where it went
SKIP_GONE = "removed during walk"  # a file deleted between the listing and its turn
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

    @property
    def moved(self) -> int:
        """Entries renamed or replaced under the walk: it may have missed where they went."""
        return self.skips.counts.get(SKIP_VANISHED, 0)


# Levels below a walk's top whose listing stays open while the walk is further down: two
# fds a level (the dir and scandir's own), and no listing held in memory. Deeper, a
# level's listing is read through, its subdirectories kept by name, and its fd closed
# while the walk is below it; coming back up goes through "..", checked against the
# inode recorded on the way down. So a chain of any depth costs a constant number of fds
# and memory for its names alone (the user can always go deeper than any fd limit).
STREAM_LEVELS = 16
PROGRESS_EVERY = 1024  # entries between progress calls (a worker also checks its parent is alive)


class Level:
    """One directory on the way down from a walk's top."""

    __slots__ = ("fd", "entries", "pending", "name", "dev", "ino", "old", "left")

    def __init__(self, fd: int, name: str, dev: int, ino: int, streaming: bool) -> None:
        self.fd = fd  # -1 while a deeper level is walked and this one is not streaming
        self.entries: Iterator[os.DirEntry[str]] | None = None  # the listing, until read through
        self.pending: list[tuple[str, int]] | None = None if streaming else []  # subdirs left to walk
        self.name = name  # in the parent
        self.dev, self.ino = dev, ino  # to know it again when coming back up through ".."
        self.old = False  # prune: its mtime, read before pruning inside, was old
        self.left = 0  # prune: entries still in it


class Traversal:
    """The one safe, fd-relative, depth-first walk below a directory fd; chown and prune
    are what it does at each entry (`scan`), on opening a directory (`on_dir`) and on
    leaving one (`leave`).

    It never follows a symlink, opens each directory with O_NOFOLLOW and checks it is the
    listed inode, never enters another mount (`Mounts`: by mount identity, not st_dev),
    holds a constant number of fds whatever the depth, and builds a path string only for
    what it reports.
    """

    ages = False  # prune: is_old() decides whether a dir may go

    def __init__(self, mounts: Mounts, progress: Callable[[int], None] | None) -> None:
        self.mounts = mounts
        self.progress = progress
        self.seen = 0  # entries looked at
        self.res = self.new_result()
        self.stack: list[Level] = []
        self.base = ""  # the walk's top, relative to the volume
        self.room = 0  # subdirs of the top that walk(collect=...) may still hand out

    # --- what chown and prune do -------------------------------------------------------

    def scan(self, lvl: Level, at_root: bool) -> tuple[str, int] | None:
        """Handle the level's entries; return the next subdir (name, d_ino) to go into
        while streaming, None once the listing is read through (then lvl.entries is None)."""
        raise NotImplementedError

    def on_dir(self, fd: int, st: os.stat_result, lvl: Level, name: str) -> None:
        """A subdir of lvl was opened and checked (fd, its fstat)."""

    def leave(self, lvl: Level, parent: Level) -> None:
        """lvl is walked through; parent's fd is open."""

    def is_old(self, st: os.stat_result) -> bool:
        """prune: is a directory old enough to go once it is empty?"""
        return False

    def new_result(self) -> Any:
        """The tallies of one walking process; they have `.skips`."""
        raise NotImplementedError

    def record(self) -> tuple:
        """A forked worker's tallies, marshal-able."""
        raise NotImplementedError

    def merge(self, record: tuple) -> None:
        """Add a worker's record to ours."""
        raise NotImplementedError

    # --- tallies around forked workers (volinit.parallel) ------------------------------

    @property
    def skips(self) -> Skips:
        return self.res.skips

    def save(self) -> tuple:
        return self.seen, self.res

    def restore(self, saved: tuple) -> None:
        self.seen, self.res = saved

    def reset(self) -> None:
        """Count from nothing (a forked worker)."""
        self.seen = 0
        self.res = self.new_result()

    # --- the walk -----------------------------------------------------------------------

    def path(self, name: str | None = None) -> str:
        """The relative path of the current level (and of name in it): built only to report."""
        parts = [lvl.name for lvl in self.stack[1:]]
        if name is not None:
            parts.append(name)
        return join(self.base, "/".join(parts)) if parts else self.base

    def skip(self, reason: str, name: str | None = None) -> None:
        skips = self.skips
        skips.counts[reason] = skips.counts.get(reason, 0) + 1
        if len(skips.samples) < SKIP_SAMPLES:
            skips.samples.append(f"{self.path(name)} ({reason})")

    def open_dir(self, parent: Level, name: str, ino: int) -> tuple[int, os.stat_result] | None:
        """Open a listed subdir, check it, hand it to on_dir: (fd, fstat), or None when skipped.

        No stat before the open: O_NOFOLLOW refuses a symlink swapped in, and the opened
        inode must be the listed one (d_ino), else the name was replaced under us. What is
        done to it goes through the fd, to the inode checked, whatever the name is by now.
        """
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent.fd)
        except (FileNotFoundError, NotADirectoryError):
            self.skip(SKIP_VANISHED, name)  # renamed away, or replaced by a file
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # swapped for a symlink
                self.skip(SKIP_VANISHED, name)
                return None
            raise os_error("cannot open", self.path(name), exc) from None
        try:
            st = os.fstat(fd)
            mounts = self.mounts
            # a mount point first: it is listed with the inode of the dir under the mount
            if mounts.dir_is_other_mount(fd, st):
                self.skip(SKIP_MOUNT, name)
                os.close(fd)
                return None
            if st.st_ino != ino and (mounts.trust_listing or not _same_inode(parent.fd, name, st)):
                self.skip(SKIP_VANISHED, name)
                os.close(fd)
                return None
            self.on_dir(fd, st, parent, name)
            return fd, st
        except BaseException:
            os.close(fd)
            raise

    def walk(self, top_fd: int, top: str, collect: list | None = None) -> int:
        """Walk below the open directory top_fd (at relative path top); return the entries
        left in it (prune's count; 0 for chown).

        With `collect`, up to self.room subdirectories of top itself are opened, checked and
        appended to it as (fd, path, name, fstat) for later, not walked.
        """
        self.base = top
        fd = dup_dir(top_fd, top)
        st = os.fstat(fd)
        top_lvl = Level(fd, "", st.st_dev, st.st_ino, True)
        stack = self.stack = [top_lvl]
        top_lvl.entries = list_dir(fd, top)
        at_root = not top
        try:
            while stack:
                lvl = stack[-1]
                if lvl.entries is not None:
                    nxt = self.scan(lvl, at_root and lvl is top_lvl)
                    if nxt is None:
                        continue  # read through: its pending subdirs, or leave it
                elif lvl.pending:
                    nxt = lvl.pending.pop()
                else:
                    nxt = None
                if nxt is not None:
                    opened = self.open_dir(lvl, *nxt)
                    if opened is None:
                        continue
                    sub_fd, st = opened
                    if collect is not None and lvl is top_lvl and self.room > 0:
                        self.room -= 1
                        collect.append((sub_fd, self.path(nxt[0]), nxt[0], st))
                        continue
                    child = Level(sub_fd, nxt[0], st.st_dev, st.st_ino, len(stack) < STREAM_LEVELS)
                    if self.ages:
                        child.old = self.is_old(st)
                    try:
                        child.entries = os.scandir(sub_fd)
                    except OSError as exc:  # scandir dups the fd: EMFILE can come here
                        os.close(sub_fd)
                        raise os_error("cannot list", self.path(nxt[0]), exc) from None
                    stack.append(child)
                    if lvl.pending is not None:  # read through already: not needed until we are back
                        os.close(lvl.fd)
                        lvl.fd = -1
                    continue
                # lvl is done
                if lvl is top_lvl:
                    break
                stack.pop()
                parent = stack[-1]
                if parent.fd < 0 and not self._reopen(parent, lvl):
                    self._lost(lvl)
                    continue
                os.close(lvl.fd)  # before leave: prune's rmdir then frees the dir at once
                lvl.fd = -1
                self.leave(lvl, parent)
        except OSError as exc:  # reading a listing failed (EIO, say): the dir being read
            raise os_error("cannot read", self.path(), exc) from None
        finally:
            for lvl in stack:
                if lvl.entries is not None:
                    lvl.entries.close()  # type: ignore[attr-defined]
                if lvl.fd >= 0:
                    os.close(lvl.fd)
            self.stack = []
        return top_lvl.left

    def _reopen(self, parent: Level, child: Level) -> bool:
        """Open parent again through child's "..": False when child was moved meanwhile."""
        try:
            fd = os.open("..", DIR_FLAGS, dir_fd=child.fd)
        except OSError:
            return False  # child was removed (ENOENT)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
            os.close(fd)
            return False
        parent.fd = fd
        return True

    def _lost(self, child: Level) -> None:
        """child moved while we were below it: the levels whose fds we closed cannot be
        found again, so what is left of them is not walked now (the walk reports them as
        changed, and apply walks again)."""
        os.close(child.fd)
        child.fd = -1
        stack = self.stack
        self.skip(SKIP_VANISHED, None)
        while stack[-1].fd < 0:
            gone = stack.pop()
            self.skip(SKIP_VANISHED, None)
            gone.pending = []
        stack[-1].left += 1  # prune: it is not known to be empty


def _same_inode(parent_fd: int, name: str, opened: os.stat_result) -> bool:
    """Does parent/name still name the opened inode? For when d_ino and st_ino disagree on
    overlayfs (without xino), which lists a directory with another inode number than stat
    gives it; stat and fstat always agree. Elsewhere a disagreement means the name was
    replaced, and asking the name again would only see the replacement."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_ino, st.st_dev) == (opened.st_ino, opened.st_dev)


# On ext2/3/4, mkfs makes lost+found as inode 11 of the filesystem root (inode 2). It is
# left alone under any name: the volume's user may rename it (onto a `dirs:` entry, say)
# to have its orphans, which fsck took from anywhere on the filesystem, given away.
EXT_ROOT_INO = 2
EXT_LOST_FOUND_INO = 11


class _Chowner(Traversal):
    """Give every entry the owner: one walking process's settings and tallies."""

    def __init__(self, mounts: Mounts, uid: int, gid: int, hardlinks: str, dry_run: bool,
                 progress: Callable[[int], None] | None, root_ino: int) -> None:
        super().__init__(mounts, progress)
        self.uid, self.gid = uid, gid
        self.chown_links = hardlinks == "chown"
        self.dry_run = dry_run
        self.root_excluded_inos = {EXT_LOST_FOUND_INO} if root_ino == EXT_ROOT_INO else set()

    def on_dir(self, fd: int, st: os.stat_result, lvl: Level, name: str) -> None:
        if st.st_uid != self.uid or st.st_gid != self.gid:
            self.res.changed += 1
            if not self.dry_run:
                try:
                    os.fchown(fd, self.uid, self.gid)
                except OSError as exc:
                    raise os_error("cannot change owner of", self.path(name), exc) from None

    def scan(self, lvl: Level, at_root: bool) -> tuple[str, int] | None:
        res = self.res
        uid, gid = self.uid, self.gid
        chown_links, dry_run, progress = self.chown_links, self.dry_run, self.progress
        roots, root_inos = self.mounts.roots, self.mounts.root_inos
        fd, entries, pending = lvl.fd, lvl.entries, lvl.pending
        assert entries is not None
        lchown = os.chown
        every = PROGRESS_EVERY
        seen = self.seen
        try:
            for entry in entries:
                seen += 1
                if progress is not None and not seen % every:
                    progress(seen)
                name = entry.name
                if at_root and (name in ROOT_EXCLUDES or entry.inode() in self.root_excluded_inos):
                    self.skip(SKIP_EXCLUDED, name)
                    continue
                # d_type from the listing: no syscall yet
                if entry.is_dir(follow_symlinks=False):
                    if pending is None:
                        return name, entry.inode()
                    pending.append((name, entry.inode()))
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    self.skip(SKIP_GONE, name)
                    continue
                if st.st_ino in root_inos and (st.st_dev, st.st_ino) in roots:  # a file bind-mounted here
                    self.skip(SKIP_MOUNT, name)
                    continue
                kind = st.st_mode & FORMAT_BITS
                # any non-directory can be hard-linked in from outside where
                # fs.protected_hardlinks is off: a FIFO or a socket as well as a file
                if st.st_nlink > 1 and not chown_links and kind != S_IFDIR:
                    self.skip(SKIP_HARDLINK, name)
                    continue
                if kind == S_IFCHR or kind == S_IFBLK:
                    self.skip(SKIP_DEVICE, name)
                    continue
                elif kind == S_IFDIR:  # listed as something else: swapped since
                    self.skip(SKIP_VANISHED, name)
                    continue
                if st.st_uid != uid or st.st_gid != gid:
                    if dry_run:
                        res.changed += 1
                        continue
                    try:
                        lchown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                        res.changed += 1
                    except FileNotFoundError:
                        self.skip(SKIP_GONE, name)
                    except OSError as exc:
                        raise os_error("cannot change owner of", self.path(name), exc) from None
        finally:
            self.seen = seen
        entries.close()  # type: ignore[attr-defined]
        lvl.entries = None
        return None

    def new_result(self) -> ChownResult:
        return ChownResult()

    def record(self) -> tuple:
        return self.seen, self.res.changed, self.skips.counts, self.skips.samples

    def merge(self, record: tuple) -> None:
        seen, changed, counts, samples = record
        self.seen += seen
        self.res.changed += changed
        self.skips.merge_counts(counts, samples)


def chown_tree(root_fd: int, root_st: os.stat_result, uid: int, gid: int, *,
               hardlinks: str = "skip", dry_run: bool = False,
               progress: Callable[[int], None] | None = None,
               workers: int | None = None, parallel_after: int | None = None,
               mounts: Mounts | None = None) -> ChownResult:
    """Give every entry below the root (not the root itself) owner uid:gid.

    Changes only entries whose owner differs; never follows symlinks (a link is changed
    itself), never enters another mount inside the volume, leaves device nodes and (unless
    hardlinks is "chown") multiply-linked non-directories alone. The caller fixes the root
    afterwards, so an interrupted walk leaves the root wrong and the next run walks again.

    A big tree is shared among `workers` forked processes (default: the usable CPUs), as
    volinit.parallel describes. A worker's failure fails the walk.
    """
    from volinit.parallel import walk_tree

    if mounts is None:
        mounts = volume_mounts(root_fd)
    walker = _Chowner(mounts, uid, gid, hardlinks, dry_run, progress, root_st.st_ino)
    walk_tree(walker, root_fd, workers, parallel_after)
    walker.res.entries = walker.seen
    return walker.res


def _check_dir(fd: int, st: os.stat_result, path: str, *, last: bool, made: bool, uid: int, parent_uid: int,
               mounts: Mounts | None) -> bool:
    """Checks on a `dirs:` component just opened (fd): True when it is another mount.

    The volume's user cannot make a directory another uid owns, but can rename one onto a
    `dirs:` name (lost+found, say), or swap one in for a directory volinit has just made:
    pruning or chowning it would hand over or delete what that user could not touch. The
    checks are on the fd, so what they pass is what is then changed.
    """
    if mounts is not None:
        if mounts.dir_is_other_mount(fd, st):
            return True  # a tmpfs or another volume mounted there: not ours
        if mounts.root_ino == EXT_ROOT_INO and st.st_ino == EXT_LOST_FOUND_INO and st.st_dev == mounts.dev:
            raise OperationError("will not adopt", path, "it is the filesystem's lost+found (inode 11), renamed",
                                 "move it back to lost+found; volinit then makes a fresh dir")
    if made:
        if st.st_uid != os.geteuid() or os.listdir(fd):
            raise OperationError("will not adopt", path, "it was replaced while volinit made it",
                                 "stop the containers writing to this volume and rerun")
    elif last and st.st_uid not in (uid, parent_uid):
        raise OperationError("will not adopt", path,
                             f"it is owned by {st.st_uid}:{st.st_gid}, neither by {uid} nor by the owner "
                             "of the dir it is in, so volinit did not make it",
                             "move it aside; volinit then makes a fresh one")
    return False


def ensure_dir(root_fd: int, rel: str, uid: int, gid: int, mode: int | None, *,
               set_owner: bool, dry_run: bool, mounts: Mounts | None = None) -> tuple[list[str], bool, bool]:
    """Create rel (and missing parents) inside the volume, refusing symlinks on the way.

    Returns (the relative paths created, whether the final dir's owner or mode changed,
    whether it lies in another mount and was left alone). Created dirs always get
    uid:gid; an existing final dir gets them when set_owner. A dir volinit did not make
    (see _check_dir) is refused.
    """
    created: list[str] = []
    changed = False
    parts = rel.split("/")
    fd = os.dup(root_fd)
    parent_uid = os.fstat(fd).st_uid
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
                    return created, changed, False
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
            if _check_dir(fd, st, path, last=last, made=made, uid=uid, parent_uid=parent_uid, mounts=mounts):
                return created, changed, True
            parent_uid = st.st_uid
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
                        check_mode(fd, want, path)
            except OSError as exc:
                raise os_error("cannot set owner or mode of", path, exc) from None
        return created, changed, False
    finally:
        os.close(fd)


def check_mode(fd: int, want: int, path: str) -> None:
    """Fail when the kernel dropped a bit of the mode just set (setgid, without CAP_FSETID):
    a root that never matches its spec would be walked again on every start."""
    got = stat.S_IMODE(os.fstat(fd).st_mode)
    if got != want:
        raise OperationError("cannot set mode of", path, f"asked for {want:04o}, the kernel kept {got:04o}",
                             "a setgid bit on a dir of another group needs CAP_FSETID: cap_add: [FSETID]")


def open_existing_dir(root_fd: int, rel: str, uid: int, mounts: Mounts | None = None) -> int | None:
    """An fd for the `dirs:` entry rel, checked as ensure_dir checks it (_check_dir), or
    None when it does not exist yet or is another mount."""
    fd = os.dup(root_fd)
    parent_uid = os.fstat(fd).st_uid
    parts = rel.split("/")
    try:
        for i, name in enumerate(parts):
            try:
                nfd, st = open_subdir(fd, name)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise os_error("cannot open", rel, exc) from None
            os.close(fd)
            fd = nfd
            path = "/".join(parts[: i + 1])
            if _check_dir(fd, st, path, last=i == len(parts) - 1, made=False, uid=uid, parent_uid=parent_uid,
                          mounts=mounts):
                return None
            parent_uid = st.st_uid
        out, fd = fd, -1
        return out
    finally:
        if fd >= 0:
            os.close(fd)
