"""One neutral description of a workload, filled by an adapter per source.

The compose reader (`docker compose config`) and the Kubernetes reader (manifests) each turn
their input into these; the rules that find the incidents and the planner that writes the
fix read only these. An adapter never decides a finding; a rule never looks at a compose
or Kubernetes dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Mount kinds. What matters to the rules is whether the data outlives the container, whether
# Docker/Kubernetes copies the image's dir into it when it is new, and who owns it.
VOLUME = "volume"  # a compose named volume, or a Kubernetes PVC / volumeClaimTemplate
BIND = "bind"  # a host directory or file (compose bind, Kubernetes hostPath)
TMPFS = "tmpfs"  # memory-backed scratch (compose tmpfs, emptyDir medium: Memory)
SCRATCH = "scratch"  # disk-backed scratch that dies with the pod (emptyDir without medium)
CONFIG = "config"  # read-only content: compose configs/secrets, configMap, secret, projected

PERSISTENT_KINDS = frozenset({VOLUME, BIND})


@dataclass(frozen=True)
class User:
    """Who the workload's processes run as. uid None means unknown, with the reason."""

    uid: Optional[int]
    gid: Optional[int] = None
    source: str = ""  # "compose user:", "image Config.User", "runAsUser", ...
    unknown_why: str = ""  # set when uid is None: what would tell us

    @property
    def known(self) -> bool:
        return self.uid is not None

    @property
    def root(self) -> bool:
        return self.uid == 0


@dataclass(frozen=True)
class Mount:
    target: str  # absolute path inside the container
    kind: str  # one of the kinds above
    source: str = ""  # volume or claim name, host path, config name; "" for tmpfs
    read_only: bool = False
    size: Optional[int] = None  # bytes: tmpfs size=, emptyDir sizeLimit; None when unbounded
    exists: Optional[bool] = None  # a named volume already created? None when not known
    # Added for check: what Docker does with a fresh volume, and tmpfs options.
    image_dir: Optional[bool] = None  # the image has a dir at target (None: image not read)
    image_owner: Optional[tuple[int, int]] = None  # its uid:gid, copied into a fresh named volume
    image_mode: Optional[int] = None  # its permission bits
    no_copy: bool = False  # volume nocopy: Docker copies nothing from the image, the root stays 0:0
    mode: Optional[int] = None  # tmpfs mode= (Docker's default is 1777)
    owner: Optional[tuple[int, int]] = None  # tmpfs uid=/gid= (Docker's default is 0:0)

    @property
    def persistent(self) -> bool:
        return self.kind in PERSISTENT_KINDS


@dataclass(frozen=True)
class PathInfo:
    """One path as the image ships it (stat of the image's filesystem, before any mount)."""

    path: str
    uid: int
    gid: int
    mode: int  # permission bits only
    is_dir: bool = True


@dataclass(frozen=True)
class Workload:
    """One container that must be able to write its temp and cache dirs."""

    name: str  # compose service, or kind/name[/container] for Kubernetes
    image: str = ""
    user: User = field(default_factory=lambda: User(None, unknown_why="not read yet"))
    read_only_root: bool = False
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # sorted (name, value); the image's ENV merged under
    working_dir: str = ""
    home: str = ""  # HOME as the process sees it: env, else the image's passwd entry
    replicas: int = 1
    gated: bool = False  # an init (volinit or a chowning one-shot) runs to completion first
    gate: str = ""  # which one, for messages
    image_volumes: tuple[str, ...] = ()  # paths the image declares as VOLUME
    persist: tuple[str, ...] = ()  # paths whose data must outlive the container (x-volinit, --persist)
    source_file: str = ""  # where it was read from, for messages
    # Added for check:
    groups: tuple[int, ...] = ()  # supplementary gids (the image's /etc/group, group_add)
    home_source: str = ""  # "environment", "image ENV", "passwd" or "default" (Docker's HOME=/)
    image_present: Optional[bool] = None  # the image is on the engine (None: not asked)
    image_paths: tuple[PathInfo, ...] = ()  # the image's own stat of the paths the rules ask about
    gated_volumes: tuple[str, ...] = ()  # volume sources the gating init mounts ("" entries: unknown)
    entrypoint: tuple[str, ...] = ()  # as it runs: the service's, else the image's
    notes: tuple[str, ...] = ()  # what could not be read and why (not findings)
    init: bool = False  # itself a one-shot init others wait on: it fixes volumes, it serves nothing
    run_as: str = ""  # the user string exactly as the runtime gets it (a name keeps its groups)
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()

    def getenv(self, name: str) -> Optional[str]:
        for key, value in self.env:
            if key == name:
                return value
        return None

    def image_path(self, path: str) -> Optional[PathInfo]:
        for info in self.image_paths:
            if info.path == path:
                return info
        return None

    def mount_for(self, path: str) -> Optional[Mount]:
        """The mount that holds path: the one whose target is the longest prefix of it."""
        best: Optional[Mount] = None
        for m in self.mounts:
            t = m.target.rstrip("/") or "/"
            if path == t or path.startswith(t + "/") or t == "/":
                if best is None or len(t) > len(best.target.rstrip("/")):
                    best = m
        return best


# Rule ids: part of the public interface (CONTRACT.md), one per incident class.
NO_TEMP_DIR = "no-temp-dir"  # seed 000: nothing writable where tempfile looks
CACHE_UNWRITABLE = "cache-unwritable"  # seed 002: a cache dir on the read-only root or not the uid's
TEMP_TOO_SMALL = "temp-too-small"  # seed 003: a small /tmp tmpfs that big downloads overflow
VOLUME_NOT_OWNED = "volume-not-owned"  # seed 003: a named volume the non-root uid cannot write
STATE_NOT_PERSISTENT = "state-not-persistent"  # seed 004: data that must last on tmpfs or the layer
RULE_IDS = (NO_TEMP_DIR, CACHE_UNWRITABLE, TEMP_TOO_SMALL, VOLUME_NOT_OWNED, STATE_NOT_PERSISTENT)


@dataclass(frozen=True)
class Finding:
    """One incident waiting to happen: `check --json` prints these fields as they are."""

    id: str  # one of RULE_IDS
    service: str  # Workload.name
    path: str  # the dir in the container the finding is about
    message: str  # what is wrong, one line
    fix: str  # what to do, one line
    source: str = "static"  # "static" (from the configuration) or "dynamic" (a probe proved it)

    def as_dict(self) -> dict:
        return {"id": self.id, "service": self.service, "path": self.path, "message": self.message,
                "fix": self.fix, "source": self.source}
