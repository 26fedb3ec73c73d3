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
from dataclasses import dataclass, field
from typing import Callable, Iterator

from volinit.errors import OperationError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SKIP_SAMPLES = 5  # how many example paths a report keeps per reason

# Reasons an entry is left alone; each is counted and reported with a few paths.
SKIP_HARDLINK = "hard link"
SKIP_DEVICE = "device node"
SKIP_MOUNT = "other filesystem"
SKIP_VANISHED = "changed during walk"
SKIP_EXCLUDED = "excluded"

# Left to the filesystem's own tools: e2fsck wants lost+found as it made it.
ROOT_EXCLUDES = frozenset({"lost+found"})


@dataclass
class Skips:
    counts: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    def add(self, reason: str, path: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.samples) < SKIP_SAMPLES:
            self.samples.append(f"{path} ({reason})")

    def merge(self, other: Skips, prefix: str = "") -> None:
        """Add another walk's skips, its sample paths placed under prefix."""
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        room = SKIP_SAMPLES - len(self.samples)
        self.samples.extend(prefix + s for s in other.samples[:max(room, 0)])

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


def join(base: str, name: str) -> str:
    return name if not base else f"{base}/{name}"


@dataclass
class ChownResult:
    entries: int = 0  # entries looked at below the root
    changed: int = 0
    skips: Skips = field(default_factory=Skips)


def chown_tree(root_fd: int, root_st: os.stat_result, uid: int, gid: int, *,
               hardlinks: str = "skip", dry_run: bool = False,
               progress: Callable[[int], None] | None = None) -> ChownResult:
    """Give every entry below the root (not the root itself) owner uid:gid.

    Changes only entries whose owner differs; never follows symlinks (a link is changed
    itself), stays on the root's filesystem, leaves device nodes and (unless hardlinks is
    "chown") multiply-linked regular files alone. The caller fixes the root afterwards, so
    an interrupted walk leaves the root wrong and the next run walks again.
    """
    res = ChownResult()
    skips = res.skips
    dev = root_st.st_dev
    chown_links = hardlinks == "chown"
    lchown = os.chown
    S_ISDIR, S_ISREG = stat.S_ISDIR, stat.S_ISREG
    S_ISCHR, S_ISBLK = stat.S_ISCHR, stat.S_ISBLK
    tick = 0

    # The stack holds (fd, entries iterator, relative path); the fds are ours to close.
    stack: list[tuple[int, Iterator[os.DirEntry[str]], str]] = []
    root_dup = os.dup(root_fd)
    stack.append((root_dup, os.scandir(root_dup), ""))
    try:
        while stack:
            fd, entries, base = stack[-1]
            descended = False
            for entry in entries:
                name = entry.name
                res.entries += 1
                tick += 1
                if progress is not None and tick >= 4096:
                    tick = 0
                    progress(res.entries)
                if not base and name in ROOT_EXCLUDES:
                    skips.add(SKIP_EXCLUDED, name)
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    skips.add(SKIP_VANISHED, join(base, name))
                    continue
                mode = st.st_mode
                if st.st_dev != dev:
                    skips.add(SKIP_MOUNT, join(base, name))
                    continue
                if S_ISDIR(mode):
                    try:
                        sub_fd, sub_st = open_subdir(fd, name, st)
                    except (FileNotFoundError, NotADirectoryError):
                        skips.add(SKIP_VANISHED, join(base, name))
                        continue
                    except OSError as exc:
                        if exc.errno == errno.ELOOP:  # swapped for a symlink
                            skips.add(SKIP_VANISHED, join(base, name))
                            continue
                        raise os_error("cannot open", join(base, name), exc) from None
                    path = join(base, name)
                    # fchown on the opened fd: the inode we verified, whatever the name is now
                    if sub_st.st_uid != uid or sub_st.st_gid != gid:
                        res.changed += 1
                        if not dry_run:
                            try:
                                os.fchown(sub_fd, uid, gid)
                            except OSError as exc:
                                os.close(sub_fd)
                                raise os_error("cannot change owner of", path, exc) from None
                    stack.append((sub_fd, os.scandir(sub_fd), path))
                    descended = True
                    break
                if S_ISREG(mode):
                    if st.st_nlink > 1 and not chown_links:
                        skips.add(SKIP_HARDLINK, join(base, name))
                        continue
                elif S_ISCHR(mode) or S_ISBLK(mode):
                    skips.add(SKIP_DEVICE, join(base, name))
                    continue
                if st.st_uid != uid or st.st_gid != gid:
                    res.changed += 1
                    if dry_run:
                        continue
                    try:
                        lchown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        res.changed -= 1
                        skips.add(SKIP_VANISHED, join(base, name))
                    except OSError as exc:
                        raise os_error("cannot change owner of", join(base, name), exc) from None
            if not descended:
                stack.pop()
                entries.close()  # type: ignore[attr-defined]
                os.close(fd)
    finally:
        for fd, entries, _ in stack:
            entries.close()  # type: ignore[attr-defined]
            os.close(fd)
    return res


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
