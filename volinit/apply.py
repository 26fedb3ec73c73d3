"""Apply a spec: for each volume, plan what differs, then change only that.

Order per volume: lock, prune, walk (when the policy says so), create the dirs, fix the
root last. A run killed midway leaves the root wrong, so the next run walks again.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Callable

from volinit import walk
from volinit.errors import OperationError, VolinitError
from volinit.mounts import volume_mounts
from volinit.prune import PruneResult, prune_dir
from volinit.spec import Spec, VolumeSpec


@dataclass
class VolumeReport:
    path: str
    owner: str
    decision: str = ""  # why the tree was (or was not) walked
    entries: int = 0
    changed: int = 0
    root_changed: bool = False
    created: list[str] = field(default_factory=list)
    dirs_fixed: list[str] = field(default_factory=list)
    pruned: int = 0
    pruned_bytes: int = 0
    skips: walk.Skips = field(default_factory=walk.Skips)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "path": self.path, "owner": self.owner, "walk": self.decision,
            "entries": self.entries, "changed": self.changed + self.root_changed,
            "created": self.created, "dirs_fixed": self.dirs_fixed,
            "pruned": {"entries": self.pruned, "bytes": self.pruned_bytes},
            "skipped": {"total": self.skips.total, "by_reason": self.skips.counts,
                        "examples": self.skips.samples},
            "seconds": round(self.seconds, 3), "error": self.error,
        }

    def summary(self, dry_run: bool) -> str:
        would = "would change" if dry_run else "changed"
        parts = [f"owner {self.owner}", self.decision]
        if self.entries:
            parts.append(f"{_n(self.entries, 'entry', 'entries')} walked")
        parts.append(f"{would} {self.changed + self.root_changed}")
        if self.skips.total:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skips.counts.items()))
            parts.append(f"skipped {self.skips.total} ({reasons}: {'; '.join(self.skips.samples)})")
        if self.created:
            parts.append(("would create " if dry_run else "created ") + ", ".join(self.created))
        if self.dirs_fixed:
            parts.append(("would fix " if dry_run else "fixed ") + ", ".join(self.dirs_fixed))
        if self.pruned:
            parts.append(f"{'would prune' if dry_run else 'pruned'} {_n(self.pruned, 'entry', 'entries')} "
                         f"({_size(self.pruned_bytes)})")
        parts.append(f"{self.seconds:.2f} s")
        return f"{self.path}: " + "; ".join(parts)  # cli.say escapes the names in it


WALKS = 3  # walks of one volume in a run while entries keep changing under them


def _n(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _root_right(st: os.stat_result, vol: VolumeSpec) -> bool:
    if (st.st_uid, st.st_gid) != (vol.owner.uid, vol.owner.gid):
        return False
    return vol.mode is None or stat.S_IMODE(st.st_mode) == vol.mode


def _lock(fd: int, path: str, say: Callable[[str], None]) -> None:
    """Serialise runs on one volume: the second waits, then finds the root right."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"{path}: waiting for another volinit run on this volume")
        fcntl.flock(fd, fcntl.LOCK_EX)


def _labelled(progress: Callable[[str, int], None] | None, where: str) -> Callable[[int], None] | None:
    """A walk's progress callback, reporting counts under the path being worked on."""
    if progress is None:
        return None
    return lambda n: progress(where, n)


CAP_FSETID = 4  # capabilities(7): keeps setgid on a file of another group through chmod


def _has_capability(cap: int) -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except (OSError, ValueError):
        pass
    return True  # unknown: try, and check_mode tells if the kernel dropped the bit


def _check_setgid(vol: VolumeSpec) -> None:
    """A setgid mode asked for where the kernel will drop it: fail before anything changes.

    Without CAP_FSETID, chmod clears S_ISGID on a dir whose group is not one of ours; the
    root would then never match its spec, and every start would walk the whole volume.
    """
    gid = vol.owner.gid
    # with chown: never, existing dirs keep whatever group they have
    if vol.chown != "never" and (gid == os.getegid() or gid in os.getgroups()):
        return
    asked = [(f"volumes.{vol.path}.mode", vol.mode)] + [(f"volumes.{vol.path}.dirs.{d.path}.mode", d.mode)
                                                       for d in vol.dirs]
    for key, mode in asked:
        if mode is not None and mode & stat.S_ISGID and not _has_capability(CAP_FSETID):
            raise OperationError(f"cannot set mode {mode:04o} at {key}", "",
                                 "a setgid bit on a dir of another group needs CAP_FSETID",
                                 "add it to the volinit service: cap_add: [CHOWN, FOWNER, DAC_OVERRIDE, FSETID]")


def apply_volume(vol: VolumeSpec, *, dry_run: bool, say: Callable[[str], None],
                 progress: Callable[[str, int], None] | None = None) -> VolumeReport:
    start = time.monotonic()
    rep = VolumeReport(vol.path, str(vol.owner))
    uid, gid = vol.owner.uid, vol.owner.gid
    root_fd = walk.open_volume(vol.path)
    try:
        _lock(root_fd, vol.path, say)
        # Mounts inside the volume (another volume, a host dir or file, a tmpfs) are left
        # alone by the prune, the walk and the dirs; found once, by mount identity.
        mounts = volume_mounts(root_fd, vol.path)
        _check_setgid(vol)
        # A dir that cannot be made (a file or a symlink where it goes, a dir volinit did
        # not make) fails the volume before anything in it changes: the dry run meets the
        # same checks, creating nothing.
        in_mounts = set()
        for d in vol.dirs:
            if walk.ensure_dir(root_fd, d.path, uid, gid, d.mode, set_owner=False, dry_run=True, mounts=mounts)[2]:
                in_mounts.add(d.path)
                rep.skips.add(walk.SKIP_MOUNT, d.path)
        for d in vol.dirs:
            if d.prune is None or d.path in in_mounts:
                continue
            dfd = walk.open_existing_dir(root_fd, d.path, uid, mounts)
            if dfd is None:
                continue
            try:
                res: PruneResult = prune_dir(dfd, d.prune, d.keep, dry_run=dry_run, mounts=mounts,
                                             progress=_labelled(progress, f"{vol.path}/{d.path}"))
            except VolinitError as exc:
                exc.where = f"{d.path}/{exc.where}" if exc.where else d.path  # prune names entries below d
                raise
            finally:
                os.close(dfd)
            rep.pruned += res.removed
            rep.pruned_bytes += res.bytes
            rep.skips.merge(res.skips, prefix=f"{d.path}/")

        root_st = os.fstat(root_fd)
        if vol.chown == "never":
            rep.decision = "chown never: existing owners left alone"
        elif vol.chown == "on-root-mismatch" and _root_right(root_st, vol):
            rep.decision = "root already right, walk skipped"
        else:
            was = f"{root_st.st_uid}:{root_st.st_gid} {stat.S_IMODE(root_st.st_mode):04o}"
            rep.decision = "chown always: walked" if vol.chown == "always" else f"root was {was}: walked"
            cb = _labelled(progress, vol.path)
            for _ in range(WALKS):
                res2 = walk.chown_tree(root_fd, root_st, uid, gid, hardlinks=vol.hardlinks,
                                       dry_run=dry_run, progress=cb, mounts=mounts)
                rep.entries += res2.entries
                rep.changed += res2.changed
                rep.skips.merge(res2.skips)
                # An entry renamed while we walked may have moved to where we had already
                # been, or been left unwalked: walk again (changing only what differs), or
                # the root, fixed below, would tell every later run that the volume is right.
                # Files merely deleted meanwhile (a running service's temp files) force
                # nothing; a directory that vanished may have been renamed, so it does.
                if dry_run or not res2.moved:
                    break
            else:
                raise OperationError("cannot finish", vol.path,
                                     f"entries were renamed or replaced during {WALKS} walks",
                                     "stop the containers writing to this volume and rerun; its root stays unfixed")

        for d in vol.dirs:
            if d.path in in_mounts:
                continue
            created, fixed, _ = walk.ensure_dir(root_fd, d.path, uid, gid, d.mode, mounts=mounts,
                                                set_owner=vol.chown != "never", dry_run=dry_run)
            rep.created.extend(created)
            if fixed:
                rep.dirs_fixed.append(d.path)

        # The root last: its being right is the proof that a walk finished.
        if vol.chown != "never" and (root_st.st_uid, root_st.st_gid) != (uid, gid):
            rep.root_changed = True
            if not dry_run:
                try:
                    os.fchown(root_fd, uid, gid)
                except OSError as exc:
                    raise walk.os_error("cannot change owner of", vol.path, exc) from None
        if vol.mode is not None and stat.S_IMODE(root_st.st_mode) != vol.mode:
            rep.root_changed = True
            if not dry_run:
                try:
                    os.fchmod(root_fd, vol.mode)
                except OSError as exc:
                    raise walk.os_error("cannot change mode of", vol.path, exc) from None
                walk.check_mode(root_fd, vol.mode, vol.path)
    finally:
        os.close(root_fd)  # also drops the lock
        rep.seconds = time.monotonic() - start
    return rep


def apply_spec(spec: Spec, *, dry_run: bool, say: Callable[[str], None],
               progress: Callable[[str, int], None] | None = None) -> tuple[list[VolumeReport], list[VolinitError]]:
    """Apply every volume; a failing volume does not stop the others."""
    reports: list[VolumeReport] = []
    errors: list[VolinitError] = []
    for vol in spec.volumes:
        try:
            reports.append(apply_volume(vol, dry_run=dry_run, say=say, progress=progress))
        except VolinitError as exc:
            # the walker names entries relative to the volume; say which volume
            if exc.where and not exc.where.startswith("/"):
                exc.where = f"{vol.path}/{exc.where}"
            errors.append(exc)
            rep = VolumeReport(vol.path, str(vol.owner), error=exc.line())
            reports.append(rep)
    return reports, errors
