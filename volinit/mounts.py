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


def mount_points(table: bytes) -> dict[bytes, set[int]]:
    """Mount point path -> ids of the mounts on it (several when mounts are stacked)."""
    points: dict[bytes, set[int]] = {}
    # Lines end at "\n" only: the kernel escapes space, tab, newline and backslash in a
    # path, but not a carriage return, which bytes.splitlines() would also split at.
    for line in table.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        try:
            mount = int(fields[0])
        except ValueError:
            raise OperationError("cannot read", MOUNTINFO, f"a line it cannot parse: {line[:200]!r}",
                                 "volinit must see every mount inside a volume to leave it alone") from None
        points.setdefault(_unescape(fields[4]), set()).add(mount)
    return points


def _read_table() -> bytes:
    try:
        with open(MOUNTINFO, "rb") as f:
            return f.read()
    except OSError as exc:
        raise OperationError("cannot read", MOUNTINFO, os.strerror(exc.errno or 0) if exc.errno else str(exc),
                             "volinit needs /proc to tell a volume from the mounts inside it; mount /proc") from None


class Mounts:
    """The mounts inside one volume, as the walk, prune and dirs creation consult them."""

    __slots__ = ("dev", "mnt_id", "roots", "same_mount_devs", "nested")

    def __init__(self, dev: int, mnt_id: int, roots: frozenset[tuple[int, int]]) -> None:
        self.dev = dev  # st_dev of the volume root
        self.mnt_id = mnt_id  # the mount the volume root is on
        self.roots = roots  # (st_dev, st_ino) of every mount root below the volume root
        self.nested = bool(roots)  # then every opened directory is checked by mount id too
        self.same_mount_devs = {dev}  # st_devs seen on this mount (overlayfs lower layers, btrfs subvolumes)

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
    """Find the mounts below the directory open at root_fd, whose absolute path is `path`.

    Without `path` it is read from /proc/self/fd. Each mount point is opened fd by fd from
    root_fd, never through a symlink, and must turn out to be on one of the mounts the
    table names for it; when one moved between the table and the lookup, read it again.
    """
    st = os.fstat(root_fd)
    try:
        own = mount_id(root_fd)
        if path is None:
            path = os.readlink(f"/proc/self/fd/{root_fd}")
    except OSError as exc:
        raise OperationError("cannot tell the mounts inside", path or "the volume", os.strerror(exc.errno or 0),
                             "volinit needs /proc to tell a volume from the mounts inside it; mount /proc") from None
    prefix = os.fsencode(path.rstrip("/")) + b"/"
    for _ in range(LOOKUPS):
        below = {p[len(prefix):]: ids for p, ids in mount_points(_read_table()).items()
                 if p.startswith(prefix) and len(p) > len(prefix)}
        roots: set[tuple[int, int]] = set()
        for rel, ids in below.items():
            if _under_another(rel, below):
                continue  # reached only through that other mount, which the walk never enters
            found = _find(root_fd, rel, ids)
            if found is None:
                break
            roots.add(found)
        else:
            return Mounts(st.st_dev, own, frozenset(roots))
    raise OperationError("cannot tell the mounts inside", path, f"mount points kept moving during {LOOKUPS} lookups",
                         "stop the containers that rename dirs in this volume and rerun; nothing was changed")


def _under_another(rel: bytes, below: dict[bytes, set[int]]) -> bool:
    parts = rel.split(b"/")
    return any(b"/".join(parts[:i]) in below for i in range(1, len(parts)))


def _find(root_fd: int, rel: bytes, ids: set[int]) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the mount root at rel below root_fd, or None when rel moved."""
    names = [n for n in rel.split(b"/") if n]
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(names):
            flags = _PATH_FLAGS if i == len(names) - 1 else _DIR_FLAGS
            nfd = os.open(name, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if mount_id(fd) not in ids:
            return None  # a symlink or a plain directory stands there now
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise OperationError("cannot open the mount point", os.fsdecode(rel), os.strerror(exc.errno or 0),
                             "volinit must see every mount inside a volume to leave it alone") from None
    finally:
        os.close(fd)
