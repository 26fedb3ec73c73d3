"""Which entries of a volume are other mounts: told by mount identity, not by device number.

Docker's named volumes and host bind mounts all live on the host's filesystem, so a second
volume or a host directory mounted inside a volume has the same st_dev as the volume around
it. A walk that stops only at a new st_dev crosses into it and chowns the host's files.
So each volume gets a `Mounts`: the mount id of the volume root, and the (st_dev, st_ino)
of the root of every mount below it, read from /proc/self/mountinfo and then found by
opening each mount point fd by fd from the volume root (never through a symlink) and
checking the mount id the kernel gives the opened fd. The walk then compares each entry's
(st_dev, st_ino), which it has in hand anyway, with that set: no syscall per entry. Where
a volume does hold mounts, each directory it opens is also checked by its own mount id.

Nobody but the host's root can add a mount to the init container's namespace, so the set
read at the start stays true for the run; a mount point renamed meanwhile (from another
container, where it is a plain directory) keeps its identity, and the lookup retries.
"""

from __future__ import annotations

import errno
import os

from volinit.errors import OperationError

MOUNTINFO = "/proc/self/mountinfo"
NEEDS_PROC = "volinit needs /proc to tell a volume from the mounts inside it; mount /proc"
LOOKUPS = 5  # reads of the mount table while mount points move under the lookup
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def mount_id(fd: int) -> int:
    """The kernel's id of the mount an open fd is on (/proc/self/fdinfo's mnt_id)."""
    info = os.open(f"/proc/self/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(info, 4096)
    finally:
        os.close(info)
    at = data.find(b"\nmnt_id:")
    if at < 0:
        raise OSError(errno.ENOTSUP, "no mnt_id in /proc/self/fdinfo (Linux 3.15 or later is needed)")
    end = data.find(b"\n", at + 1)
    return int(data[at + 8:end if end > 0 else None])


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash in paths as \\040 and the like."""
    if b"\\" not in field:
        return field
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


class MountLine:
    """One line of /proc/self/mountinfo: the fields volinit uses."""

    __slots__ = ("id", "parent", "point", "fstype")

    def __init__(self, id: int, parent: int, point: bytes, fstype: bytes) -> None:
        self.id, self.parent, self.point, self.fstype = id, parent, point, fstype


def parse_table(table: bytes) -> list[MountLine]:
    lines = []
    # Lines end at "\n" only: the kernel escapes space, tab, newline and backslash in a
    # path, but not a carriage return, which bytes.splitlines() would also split at.
    for line in table.split(b"\n"):
        if not line:
            continue
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
            lines.append(MountLine(int(fields[0]), int(fields[1]), _unescape(fields[4]), fields[sep + 1]))
        except (ValueError, IndexError):
            raise OperationError("cannot read", MOUNTINFO, f"a line it cannot parse: {line[:200]!r}",
                                 "volinit must see every mount inside a volume to leave it alone") from None
    return lines


def _read_table() -> bytes:
    try:
        with open(MOUNTINFO, "rb") as f:
            return f.read()
    except OSError as exc:
        raise OperationError("cannot read", MOUNTINFO, os.strerror(exc.errno or 0) if exc.errno else str(exc),
                             NEEDS_PROC) from None


class Mounts:
    """The mounts inside one volume, as the walk, prune and dirs creation consult them."""

    __slots__ = ("dev", "mnt_id", "roots", "root_inos", "same_mount_devs", "nested", "trust_listing", "root_ino")

    def __init__(self, dev: int, mnt_id: int, roots: frozenset[tuple[int, int]], nested: bool = False,
                 trust_listing: bool = True, root_ino: int = 0) -> None:
        self.dev = dev  # st_dev of the volume root
        self.mnt_id = mnt_id  # the mount the volume root is on
        self.roots = roots  # (st_dev, st_ino) of the root of every mount on that mount
        self.root_inos = frozenset(ino for _, ino in roots)  # the walk asks this first: no tuple per entry
        self.nested = nested  # then every opened directory is checked by mount id too
        self.same_mount_devs = {dev}  # st_devs seen on this mount (overlayfs lower layers, btrfs subvolumes)
        # A listing's d_ino is the inode a name opens, except on overlayfs (without xino),
        # where a directory is listed with another number than stat gives it.
        self.trust_listing = trust_listing
        self.root_ino = root_ino  # inode of the volume root (2: the root of an ext filesystem)

    def is_mount_root(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) in self.roots

    def dir_is_other_mount(self, fd: int, st: os.stat_result) -> bool:
        """Is the directory open at fd (fstat st) the root of, or inside, another mount?"""
        if (st.st_dev, st.st_ino) in self.roots:
            return True
        if st.st_dev in self.same_mount_devs and not self.nested:
            return False
        try:
            other = mount_id(fd) != self.mnt_id
        except OSError as exc:
            raise OperationError("cannot tell the mount of a directory in", "", os.strerror(exc.errno or 0),
                                 "volinit needs /proc/self/fdinfo to stay inside the volume") from None
        if not other:
            self.same_mount_devs.add(st.st_dev)
        return other


def volume_mounts(root_fd: int, path: str | None = None) -> Mounts:
    """Find the mounts that the directory open at root_fd could reach.

    They are the mounts whose parent is the mount root_fd is on: found by mount id, not
    by path, so no rename by the volume's user can hide one (a mount point path is the
    user's to change, from a container where it is a plain directory). Each one's root is
    opened fd by fd from "/", never through a symlink, checked by its mount id, and its
    (st_dev, st_ino) kept: a mount root keeps that identity wherever it is moved, and the
    walk has each entry's anyway. A mount whose path cannot be opened now is outside the
    volume or hidden under another mount, unless its path is below the volume's own (as
    the kernel names our fd now): then it moved during the lookup, and the table is read
    again. If any stays unknown, the walk also asks every directory it opens its mount id.
    """
    st = os.fstat(root_fd)
    for _ in range(LOOKUPS):
        try:
            own = mount_id(root_fd)
            here = os.fsencode(os.readlink(f"/proc/self/fd/{root_fd}"))
        except OSError as exc:
            raise OperationError("cannot tell the mounts inside", path or "the volume",
                                 os.strerror(exc.errno or 0),
                                 NEEDS_PROC) from None
        table = parse_table(_read_table())
        fstype = next((m.fstype for m in table if m.id == own), b"")
        children = [m for m in table if m.parent == own and m.id != own]
        stacked = _points(table)  # a mount point may hold several mounts, the top one reached
        prefix = here.rstrip(b"/") + b"/"
        roots: set[tuple[int, int]] = set()
        moved = unknown = False
        for point in _points(children):
            found = _find(point, stacked[point])
            if found is not None:
                roots.add(found)
            elif point.startswith(prefix) and not _under_another(point, children):
                moved = True
                break
            else:
                unknown = True  # hidden under another mount, or outside the volume: not known by inode
        if not moved:
            # With every child mount's root known by inode, the set decides, whatever their
            # paths become; only when one is not known is every directory asked its mount id.
            return Mounts(st.st_dev, own, frozenset(roots), nested=unknown,
                          trust_listing=fstype != b"overlay", root_ino=st.st_ino)
    raise OperationError("cannot tell the mounts inside", path or os.fsdecode(here),
                         f"mount points kept moving during {LOOKUPS} lookups",
                         "stop the containers that rename dirs in this volume and rerun; nothing was changed")


def _points(lines: list[MountLine]) -> dict[bytes, set[int]]:
    points: dict[bytes, set[int]] = {}
    for m in lines:
        points.setdefault(m.point, set()).add(m.id)
    return points


def _under_another(point: bytes, children: list[MountLine]) -> bool:
    """Is point below another mount point (so it is reached, if at all, only through it)?"""
    return any(point.startswith(m.point.rstrip(b"/") + b"/") for m in children)


def _find(point: bytes, ids: set[int]) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the mount root at the absolute path point, or None when a
    symlink, another mount or nothing stands there now."""
    names = [n for n in point.split(b"/") if n]
    fd = os.open("/", _DIR_FLAGS)
    try:
        for i, name in enumerate(names):
            flags = _PATH_FLAGS if i == len(names) - 1 else _DIR_FLAGS
            nfd = os.open(name, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if mount_id(fd) not in ids:
            return None
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
            return None
        raise OperationError("cannot open the mount point", os.fsdecode(point), os.strerror(exc.errno or 0),
                             "volinit must see every mount inside a volume to leave it alone") from None
    finally:
        os.close(fd)
