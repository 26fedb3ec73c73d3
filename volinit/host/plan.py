"""The fix planner: from workloads and their findings to a neutral plan of what to change.

The plan names volumes by their source name, directories relative to a volume, environment
variables and mounts per workload; it holds no compose or Kubernetes dict. `fix.py` renders
it as a compose override and a spec; the Kubernetes writer renders the same plan as patches.

What the planner will not guess it refuses, with the reason and the way out: an unknown uid,
one volume written by two uids, a cache the user mounted read-only everywhere, state on a
tmpfs an override cannot take away.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from volinit.host.workload import (
    CACHE_UNWRITABLE,
    NO_TEMP_DIR,
    STATE_NOT_PERSISTENT,
    TEMP_TOO_SMALL,
    VOLUME,
    VOLUME_NOT_OWNED,
    Finding,
    Mount,
    Workload,
)
from volinit.spec import Owner

TEMP_DIR = ".tmp"
TEMP_DIR_MODE = 0o700  # temp files of one uid; nobody else needs to list them
TEMP_PRUNE = "24h"  # a job killed mid-download leaves its temp files; a day is longer than any job
# Where a cache variable goes when it moves into a volume: the dirs its tool uses under
# $HOME by default, so a cache found on disk looks like the one the tool would have made.
CACHE_DIRS = {"XDG_CACHE_HOME": ".cache", "HF_HOME": ".cache/huggingface", "TORCH_HOME": ".cache/torch"}
# Where a new volume goes when a workload has none to use, in this order: /tmp makes
# hard-coded /tmp paths work too; /var/tmp when a tmpfs already holds /tmp.
NEW_VOLUME_TARGETS = ("/tmp", "/var/tmp", "/volinit")
NEW_VOLUME_PREFIX = "volinit-"
# Roles of a volume in the plan, for writers that render them differently (an emptyDir for
# scratch in Kubernetes, a claim for state).
EXISTING, SCRATCH_NEW, STATE_NEW = "existing", "scratch", "state"


@dataclass(frozen=True)
class DirPlan:
    """A directory the init creates inside a volume (relative path), optionally pruned."""

    path: str
    mode: Optional[int] = None
    prune: Optional[str] = None  # a spec duration, e.g. "24h"


@dataclass(frozen=True)
class VolumePlan:
    """A volume the init must own before its writers start."""

    source: str  # the volume's name as the workloads' mounts name it
    owner: Owner
    mode: Optional[int] = None  # the volume root's mode, when the plan sets one
    dirs: tuple[DirPlan, ...] = ()
    role: str = EXISTING  # EXISTING, or a volume the fix adds: SCRATCH_NEW, STATE_NEW
    writers: tuple[str, ...] = ()  # workloads that mount it read-write, sorted


@dataclass(frozen=True)
class WorkloadPlan:
    """What changes in one workload."""

    name: str
    env: tuple[tuple[str, str], ...] = ()  # (name, value) to set, sorted by name
    mounts: tuple[Mount, ...] = ()  # mounts to add, sorted by target
    gated: bool = False  # must wait for the init to finish
    why: tuple[str, ...] = ()  # one line per change, for the summary fix prints


@dataclass(frozen=True)
class Refusal:
    """Something the planner will not decide for the user."""

    service: str
    path: str
    why: str
    fix: str


@dataclass(frozen=True)
class FixPlan:
    volumes: tuple[VolumePlan, ...] = ()  # sorted by source
    workloads: tuple[WorkloadPlan, ...] = ()  # only the ones that change, sorted by name
    refusals: tuple[Refusal, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.volumes and not self.workloads

    @property
    def needs_init(self) -> bool:
        return bool(self.volumes)


class _Draft:
    """The mutable working state of one planning run; frozen into a FixPlan at the end."""

    def __init__(self, workloads: Iterable[Workload], owners: Mapping[str, Owner]) -> None:
        self.workloads = {w.name: w for w in workloads}
        self.owners = dict(owners)
        self.volumes: dict[str, dict[str, DirPlan]] = {}  # source -> rel path -> dir
        self.modes: dict[str, int] = {}
        self.roles: dict[str, str] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.mounts: dict[str, dict[str, Mount]] = {}
        self.why: dict[str, list[str]] = {}
        self.refusals: list[Refusal] = []

    # -- facts -------------------------------------------------------------------------------
    def owner_of(self, w: Workload) -> Optional[Owner]:
        if w.name in self.owners:
            return self.owners[w.name]
        if w.user.uid is None:
            return None
        return Owner(w.user.uid, w.user.gid if w.user.gid is not None else w.user.uid)

    def all_mounts(self, w: Workload) -> tuple[Mount, ...]:
        return w.mounts + tuple(self.mounts.get(w.name, {}).values())

    def mount_for(self, w: Workload, path: str) -> Optional[Mount]:
        return Workload(name=w.name, mounts=self.all_mounts(w)).mount_for(path)

    def writable_volumes(self, w: Workload) -> list[Mount]:
        found = [m for m in self.all_mounts(w) if m.kind == VOLUME and m.source and not m.read_only]
        return sorted(found, key=lambda m: m.target)

    def writers(self, source: str) -> list[Workload]:
        """The workloads that mount source read-write, an init of the user's own aside (it
        runs to completion before its services, and is not one of them)."""
        return sorted((w for w in self.workloads.values()
                       if not w.init and any(m.kind == VOLUME and m.source == source and not m.read_only
                                             for m in self.all_mounts(w))), key=lambda w: w.name)

    def mounted_anywhere(self, source: str) -> list[tuple[str, Mount]]:
        return [(w.name, m) for w in self.workloads.values() for m in w.mounts
                if m.kind == VOLUME and m.source == source]

    # -- changes -----------------------------------------------------------------------------
    def note(self, w: Workload, line: str) -> None:
        lines = self.why.setdefault(w.name, [])
        if line not in lines:
            lines.append(line)

    def own(self, source: str, role: str = EXISTING) -> dict[str, DirPlan]:
        self.roles.setdefault(source, role)
        return self.volumes.setdefault(source, {})

    def add_dir(self, source: str, d: DirPlan) -> None:
        dirs = self.own(source)
        old = dirs.get(d.path)
        if old is None or (old.mode is None and old.prune is None):
            dirs[d.path] = d

    def set_env(self, w: Workload, name: str, value: str) -> None:
        self.env.setdefault(w.name, {})[name] = value

    def refuse(self, w: Workload, path: str, why: str, fix: str) -> None:
        r = Refusal(w.name, path, why, fix)
        if r not in self.refusals:
            self.refusals.append(r)

    def new_volume(self, w: Workload) -> Mount:
        """The workload's own new volume (one per workload), mounted where nothing is."""
        for m in self.mounts.get(w.name, {}).values():
            if m.source.startswith(NEW_VOLUME_PREFIX) and self.roles.get(m.source) == SCRATCH_NEW:
                return m
        taken = {m.target.rstrip("/") or "/" for m in self.all_mounts(w)}
        target = next((t for t in NEW_VOLUME_TARGETS if t not in taken), f"/volinit-{w.name}")
        source = _volume_name(w.name, "")
        m = Mount(target=target, kind=VOLUME, source=source)
        self.mounts.setdefault(w.name, {})[target] = m
        self.own(source, SCRATCH_NEW)
        if target in ("/tmp", "/var/tmp"):
            # what /tmp always is: anyone may create, only the owner may remove
            self.modes[source] = 0o1777
        self.note(w, f"new volume {source} at {target}: nothing writable to hold temp or cache files")
        return m


def _volume_name(service: str, path: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", path.strip("/")).strip("-.")
    name = NEW_VOLUME_PREFIX + service + (f"-{slug}" if slug else "")
    return name


def _abs(w: Workload, value: Optional[str]) -> str:
    """A path from the environment as the process resolves it: relative to its working dir,
    with no '..' left to climb out of the volume it seems to be on."""
    if not value:
        return ""
    return posixpath.normpath(posixpath.join(w.working_dir or "/", value))


def _rel(path: str, target: str) -> str:
    target = target.rstrip("/")
    return path[len(target):].strip("/") if path != target else ""


def _under(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top + "/") or top == "/"


def plan(workloads: Iterable[Workload], findings: Iterable[Finding],
         owners: Optional[Mapping[str, Owner]] = None) -> FixPlan:
    """What to change so that none of `findings` happens, for the given workloads.

    `owners` (from --owner SERVICE=UID:GID) stands in for a uid the reader could not learn.
    The result is the same for the same input, whatever the order it came in.
    """
    draft = _Draft(workloads, owners or {})
    for name in sorted(draft.owners):
        if name not in draft.workloads:
            raise ValueError(f"--owner names {name!r}, which is not a workload")  # fix.py checks first
    order = {rid: i for i, rid in enumerate((VOLUME_NOT_OWNED, STATE_NOT_PERSISTENT, CACHE_UNWRITABLE,
                                             NO_TEMP_DIR, TEMP_TOO_SMALL))}
    todo = sorted(set(findings), key=lambda f: (f.service, order.get(f.id, 99), f.path, f.id))
    for f in todo:
        w = draft.workloads.get(f.service)
        if w is None:
            continue
        if f.id == VOLUME_NOT_OWNED:
            _fix_volume(draft, w, f.path)
        elif f.id == STATE_NOT_PERSISTENT:
            _fix_state(draft, w, f.path)
        elif f.id == CACHE_UNWRITABLE:
            _fix_cache(draft, w, f.path)
        elif f.id in (NO_TEMP_DIR, TEMP_TOO_SMALL):
            _fix_temp(draft, w)
    return _freeze(draft)


def _fix_volume(draft: _Draft, w: Workload, path: str) -> None:
    m = draft.mount_for(w, path)
    if m is None or m.kind != VOLUME or not m.source:
        kind = m.kind if m is not None else "the container's own layer"
        draft.refuse(w, path, f"{path} is on {kind}, not a named volume the init can be given",
                     "chown a host dir on the host yourself (volinit never changes host dirs), or mount a named volume")
        return
    draft.own(m.source)
    if m.target.rstrip("/") != path.rstrip("/") and _rel(path, m.target):
        draft.add_dir(m.source, DirPlan(_rel(path, m.target)))
    draft.note(w, f"volume {m.source} at {m.target}: the init gives it to the service's uid first")


def _fix_state(draft: _Draft, w: Workload, path: str) -> None:
    m = draft.mount_for(w, path)
    if m is not None and m.target.rstrip("/") == path.rstrip("/") and m.kind == VOLUME:
        return _fix_volume(draft, w, path)
    if m is not None and not m.persistent and m.target.rstrip("/") == path.rstrip("/"):
        # a dir below a tmpfs takes a volume mounted over it (Docker mounts the deeper one
        # second); the tmpfs's own target cannot: an override can add mounts, not remove one
        draft.refuse(w, path, f"{path} is a {m.kind} mount, which an override cannot remove",
                     f"remove the {m.kind} at {m.target} from the service and rerun volinit fix")
        return
    source = _volume_name(w.name, path)
    new = Mount(target=path, kind=VOLUME, source=source)
    draft.mounts.setdefault(w.name, {})[path] = new
    draft.own(source, STATE_NEW)
    draft.note(w, f"new volume {source} at {path}: its data must outlive the container")


def _cache_vars(w: Workload, path: str) -> list[str]:
    """The variables that put a cache at path: set to it, or HOME where XDG falls back."""
    names = [n for n in CACHE_DIRS if w.getenv(n) and _abs(w, w.getenv(n)) == posixpath.normpath(path)]
    if names:
        return names
    home = w.getenv("HOME") or w.home
    if home and w.getenv("XDG_CACHE_HOME") is None and _under(path, home):
        return ["XDG_CACHE_HOME"]
    return []


def _fix_cache(draft: _Draft, w: Workload, path: str) -> None:
    m = draft.mount_for(w, path)
    if m is not None and m.kind == VOLUME and m.source:
        if not m.read_only:
            draft.own(m.source)
            rel = _rel(path, m.target)
            if rel:
                draft.add_dir(m.source, DirPlan(rel))
            draft.note(w, f"cache dir {path} on volume {m.source}: the init creates it for the service's uid")
            return
        elsewhere = [n for n, o in draft.mounted_anywhere(m.source) if not o.read_only]
        where = ("read-only in every service that mounts it" if not elsewhere
                 else "read-only in this service")
        draft.refuse(w, path, f"the cache is on volume {m.source}, mounted {where}; volinit will not decide "
                     "whether it should be writable",
                     f"mount {m.source} read-write in {w.name}, or point the cache variable at a writable dir")
        return
    names = _cache_vars(w, path)
    if not names:
        draft.refuse(w, path, "no cache variable volinit knows points there (XDG_CACHE_HOME, HF_HOME, TORCH_HOME, "
                     "HOME)", "set the tool's cache variable to a dir on a volume, or mount a volume there")
        return
    vol = _home_volume(draft, w)
    for name in names:
        value = f"{vol.target.rstrip('/')}/{CACHE_DIRS[name]}"
        draft.set_env(w, name, value)
        draft.add_dir(vol.source, DirPlan(CACHE_DIRS[name]))
        draft.note(w, f"{name}={value}: {path} is not writable for the service")


def _home_volume(draft: _Draft, w: Workload) -> Mount:
    """The volume a workload's relocated temp and cache dirs go to: its first writable named
    volume by target (deterministic), else a new one of its own."""
    vols = draft.writable_volumes(w)
    return vols[0] if vols else draft.new_volume(w)


def _fix_temp(draft: _Draft, w: Workload) -> None:
    current = _abs(w, w.getenv("TMPDIR"))
    if current:
        m = draft.mount_for(w, current)
        if m is not None and m.kind == VOLUME and m.source and not m.read_only:
            rel = _rel(current, m.target)
            draft.own(m.source)
            if rel:
                draft.add_dir(m.source, DirPlan(rel, TEMP_DIR_MODE, TEMP_PRUNE))
            draft.note(w, f"TMPDIR={current} on volume {m.source}: the init creates it for the service's uid")
            return
    vol = _home_volume(draft, w)
    value = f"{vol.target.rstrip('/')}/{TEMP_DIR}"
    draft.set_env(w, "TMPDIR", value)
    draft.add_dir(vol.source, DirPlan(TEMP_DIR, TEMP_DIR_MODE, TEMP_PRUNE))
    draft.note(w, f"TMPDIR={value}: temp files on a disk-backed volume, day-old orphans pruned")


def _named_dirs(draft: _Draft, source: str, writers: Iterable[Workload]) -> None:
    """The dirs the writers' TMPDIR and cache variables name on a volume the init owns:
    tempfile never creates its dir, and a tool that makes its cache dir may not make parents."""
    for w in writers:
        env = dict(w.env) | draft.env.get(w.name, {})
        for name in ("TMPDIR", *CACHE_DIRS):
            value = _abs(w, env.get(name))
            if not value:
                continue
            m = draft.mount_for(w, value)
            if m is None or m.kind != VOLUME or m.source != source or m.read_only:
                continue
            rel = _rel(value, m.target)
            if rel:
                draft.add_dir(source, DirPlan(rel, TEMP_DIR_MODE, TEMP_PRUNE) if name == "TMPDIR" else DirPlan(rel))


def _unknown_writers(draft: _Draft) -> None:
    """A workload whose uid is unknown and that writes a named volume: volinit cannot tell
    whether that volume needs an owner, nor which."""
    for w in sorted(draft.workloads.values(), key=lambda w: w.name):
        if w.init or draft.owner_of(w) is not None:
            continue
        for m in sorted(w.mounts, key=lambda m: m.target):
            if m.kind == VOLUME and m.source and not m.read_only:
                draft.refuse(w, f"volume {m.source}",
                             f"the uid it runs as is unknown ({w.user.unknown_why or 'not read'}), "
                             f"and it writes volume {m.source}",
                             f"build or pull its image so volinit can read its user, or pass --owner {w.name}=UID:GID")
                break


def _freeze(draft: _Draft) -> FixPlan:
    _unknown_writers(draft)
    volumes: list[VolumePlan] = []
    gated: set[str] = set()
    for source in sorted(draft.volumes):
        writers = draft.writers(source)
        known = [(w, draft.owner_of(w)) for w in writers]
        unknown = [w for w, o in known if o is None]
        for w in unknown:
            draft.refuse(w, f"volume {source}", f"the uid it runs as is unknown ({w.user.unknown_why or 'not read'}), "
                         f"and it writes volume {source}",
                         f"build or pull its image so volinit can read its user, or pass --owner {w.name}=UID:GID")
        owners = sorted({o for _, o in known if o is not None and o.uid != 0}, key=lambda o: (o.uid, o.gid))
        uids = sorted({o.uid for o in owners})
        if len(uids) > 1:
            who = ", ".join(f"{w.name} ({o})" for w, o in known if o is not None and o.uid != 0)
            draft.refuse(writers[0], f"volume {source}", f"written by services with different uids: {who}",
                         "run them as one uid (user:), or give each its own volume")
        if unknown or len(uids) > 1:
            continue
        owner = owners[0] if owners else Owner(0, 0)
        _named_dirs(draft, source, writers)
        volumes.append(VolumePlan(
            source=source, owner=owner, mode=draft.modes.get(source),
            dirs=tuple(sorted(draft.volumes[source].values(), key=lambda d: d.path)),
            role=draft.roles.get(source, EXISTING), writers=tuple(w.name for w in writers)))
        gated.update(w.name for w in writers)
        for w in writers:
            if w.name not in draft.why:
                draft.note(w, f"waits for the init: it writes volume {source}, which the init gives to {owner}")
    names = sorted(set(draft.env) | set(draft.mounts) | gated | set(draft.why))
    plans = []
    for name in names:
        plans.append(WorkloadPlan(
            name=name,
            env=tuple(sorted(draft.env.get(name, {}).items())),
            mounts=tuple(sorted(draft.mounts.get(name, {}).values(), key=lambda m: m.target)),
            gated=name in gated,
            why=tuple(draft.why.get(name, ())),
        ))
    refusals = tuple(sorted(draft.refusals, key=lambda r: (r.service, r.path, r.why)))
    if refusals:
        return FixPlan(refusals=refusals)
    return FixPlan(tuple(volumes), tuple(plans), refusals)
