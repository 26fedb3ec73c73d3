"""The five incident rules, read off the neutral workload model alone.

Each rule answers one question a service would otherwise answer by dying at run time
(seeds 000-004). They read only `Workload`: the compose and Kubernetes readers fill it in
and decide nothing. What the configuration cannot tell (an image that is not present, a
uid that is unknown) is no finding here: the reader notes it, and the dynamic probe proves
what the static rules can only infer.
"""

from __future__ import annotations

import posixpath
import re
from typing import Iterable, Optional, Sequence

from volinit.host.workload import (
    BIND,
    CACHE_UNWRITABLE,
    CONFIG,
    NO_TEMP_DIR,
    SCRATCH,
    STATE_NOT_PERSISTENT,
    TEMP_TOO_SMALL,
    TMPFS,
    VOLUME,
    VOLUME_NOT_OWNED,
    Finding,
    Mount,
    Workload,
)

DEFAULT_MIN_TEMP = 1 << 30  # 1 GiB: a model or dataset download staged through tempfile
TEMP_VARS = ("TMPDIR", "TEMP", "TMP")  # tempfile's order, then PLATFORM_TEMP_DIRS, then cwd
PLATFORM_TEMP_DIRS = ("/tmp", "/var/tmp", "/usr/tmp")
CACHE_VARS = ("XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME")
# A service that sets one of these downloads models or packages: its temp files are big.
DOWNLOAD_VARS = CACHE_VARS + ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
                              "SENTENCE_TRANSFORMERS_HOME", "PIP_CACHE_DIR", "VOLINIT_DIRS")
TMPFS_DEFAULT_MODE = 0o1777  # Docker's tmpfs mounts are world-writable and sticky unless mode= says else

FIX_TEMP = ("mount a tmpfs at /tmp (tmpfs: [/tmp]) or set TMPDIR to a dir on a volume the service owns "
            "(`volinit fix` writes both)")
FIX_OWN = ("gate the service on the volinit init service (`volinit fix` writes it); "
           "for a volume that already exists: volinit repair {volume} --owner {owner}")


def static_findings(workloads: Sequence[Workload], *, min_temp: int, min_temp_for_all: bool = False) -> list[Finding]:
    """Every finding the configuration alone shows, in workload order then rule order.

    temp-too-small applies to services that show they download big files (a model or
    package cache variable is set), or to every service when min_temp_for_all (the user
    gave --min-temp): a 64 MiB /tmp is right for a database and wrong for a model loader.
    """
    out: list[Finding] = []
    for w in workloads:
        if w.init:
            continue
        out += no_temp_dir(w)
        out += cache_unwritable(w)
        out += temp_too_small(w, min_temp, every=min_temp_for_all)
        out += volume_not_owned(w)
        out += state_not_persistent(w)
    return out


# --- what a uid can write, as far as the configuration shows ---------------------------

def may_write(uid: Optional[int], gids: Iterable[Optional[int]], owner: tuple[int, int], mode: int) -> Optional[bool]:
    """Whether uid (with these gids) may create entries in a dir of this owner and mode."""
    if uid is None:
        return True if mode & 0o002 else None
    if uid == 0:
        return True
    if owner[0] == uid:
        return bool(mode & 0o200)
    if owner[1] in {g for g in gids if g is not None}:
        return bool(mode & 0o020)
    return bool(mode & 0o002)


def _on_mount(w: Workload, path: str) -> Optional[Mount]:
    m = w.mount_for(path)
    return m if m is not None and m.target.rstrip("/") else None


def writable(w: Workload, path: str) -> tuple[Optional[bool], str]:
    """Whether the service's uid can write at path (or create it), and why not.

    None: the configuration does not tell (image not read, uid unknown); the probe will.
    A named volume or bind mount counts as writable here: who owns it is volume-not-owned's
    question, not this one's.
    """
    gids = (w.user.gid, *w.groups)
    m = _on_mount(w, path)
    if m is not None:
        if m.read_only or m.kind == CONFIG:
            return False, f"is on {m.target}, mounted read-only"
        if m.kind == TMPFS:
            owner = m.owner or (0, 0)
            mode = TMPFS_DEFAULT_MODE if m.mode is None else m.mode
            ok = may_write(w.user.uid, gids, owner, mode)
            return ok, "" if ok is not False else f"is on tmpfs {m.target} ({owner[0]}:{owner[1]} mode {mode:04o})"
        return True, ""
    if w.read_only_root:
        return False, "is on the read-only root filesystem"
    if not w.image_present or not w.user.known:
        return None, ""
    cur = posixpath.normpath(path)
    while True:
        info = w.image_path(cur)
        if info is not None:
            ok = may_write(w.user.uid, gids, (info.uid, info.gid), info.mode)
            if ok is not False:
                return ok, ""
            what = "is" if cur == posixpath.normpath(path) else f"does not exist and its parent {cur} is"
            return False, f"{what} {info.uid}:{info.gid} mode {info.mode:04o} in the image"
        if cur == "/":
            return None, ""
        cur = posixpath.dirname(cur)


def _uid(w: Workload) -> str:
    if not w.user.known:
        return "its user"
    return f"uid {w.user.uid}" if w.user.gid is None else f"{w.user.uid}:{w.user.gid}"


def _abs(w: Workload, path: str) -> str:
    return posixpath.normpath(posixpath.join(w.working_dir or "/", path))


def temp_candidates(w: Workload) -> list[tuple[str, str]]:
    """(how, dir) in the order Python's tempfile tries them."""
    out = [(var, _abs(w, v)) for var in TEMP_VARS if (v := w.getenv(var))]
    out += [(d, d) for d in PLATFORM_TEMP_DIRS]
    out.append(("the working dir", w.working_dir or "/"))
    return out


def _temp_usable(w: Workload, var: str, path: str) -> bool:
    """Statically: tempfile could use path. It never creates the dir, so a path on the root
    filesystem must be a dir the image ships; a path on a volume is made by the init or shim."""
    ok, _ = writable(w, path)
    if ok is False:
        return False
    if _on_mount(w, path) is None and w.image_present and w.image_path(path) is None and var in TEMP_VARS:
        return False
    return True


# --- the rules ---------------------------------------------------------------------------

def no_temp_dir(w: Workload) -> list[Finding]:
    """seed 000: a read-only root (root too) with nothing writable where tempfile looks."""
    if not w.read_only_root:
        return []
    cands = temp_candidates(w)
    if any(_temp_usable(w, var, path) for var, path in cands):
        return []
    tmpdir = w.getenv("TMPDIR")
    path = _abs(w, tmpdir) if tmpdir else "/tmp"
    where = f"TMPDIR={tmpdir} is not writable" if tmpdir else "TMPDIR is unset"
    return [Finding(NO_TEMP_DIR, w.name, path,
                    f"read_only root and no writable temp dir: {where}, and /tmp, /var/tmp, /usr/tmp and "
                    f"the working dir {w.working_dir or '/'} are on the read-only root; tempfile raises "
                    "'No usable temporary directory' (seed 000)",
                    FIX_TEMP)]


def cache_dirs(w: Workload) -> list[tuple[str, str]]:
    """(variable, absolute dir) for each cache location the service's environment names."""
    out = [(var, _abs(w, v)) for var in CACHE_VARS if (v := w.getenv(var))]
    for d in re.split(r"[\s:]+", w.getenv("VOLINIT_DIRS") or ""):
        if d:
            out.append(("VOLINIT_DIRS", _abs(w, d)))
    return out


def cache_unwritable(w: Workload) -> list[Finding]:
    """seed 002: a cache variable, or HOME where XDG defaults fall back to it, not writable."""
    by_path: dict[str, list[str]] = {}
    for var, path in cache_dirs(w):
        by_path.setdefault(path, []).append(var)
    out: list[Finding] = []
    for path, names in by_path.items():
        ok, why = writable(w, path)
        if ok is False:
            out.append(Finding(CACHE_UNWRITABLE, w.name, path,
                               f"{'='.join(names)}={path} {why}: {_uid(w)} cannot write its cache there (seed 002)",
                               f"point {names[0]} at a dir on a volume the service owns, e.g. /app/cache "
                               "(`volinit fix` writes it)"))
    home = w.home
    if home and not w.getenv("XDG_CACHE_HOME") and home not in by_path:
        cache = posixpath.join(home, ".cache")
        if w.home_source in ("environment", "image ENV"):
            ok, why = writable(w, cache)
        else:
            # Docker's own HOME (passwd, or / for a uid with no entry): flagged only when the
            # home itself is missing and cannot be made, as with adduser --system's /nonexistent.
            ok, why = (None, "")
            if _on_mount(w, home) is None and w.image_present and w.image_path(home) is None:
                ok, why = writable(w, home)
                why = f"is under HOME {home}, which {why}" if ok is False else why
        if ok is False:
            out.append(Finding(CACHE_UNWRITABLE, w.name, cache,
                               f"XDG_CACHE_HOME is unset, so caches go to $HOME/.cache, {cache}, which {why}: "
                               f"{_uid(w)} cannot write it (seed 002)",
                               "set XDG_CACHE_HOME (and HOME) to a dir on a volume the service owns "
                               "(`volinit fix` writes it)"))
    return out


def chosen_temp_dir(w: Workload) -> Optional[str]:
    """The dir tempfile would pick, as far as the configuration shows."""
    for var, path in temp_candidates(w):
        if _temp_usable(w, var, path):
            return path
    return None


def temp_too_small(w: Workload, min_temp: int, *, every: bool = False) -> list[Finding]:
    """seed 003 (second failure): temp files land on a tmpfs smaller than a download."""
    if not every and not any(w.getenv(v) for v in DOWNLOAD_VARS):
        return []
    path = chosen_temp_dir(w)
    if path is None:
        return []
    m = _on_mount(w, path)
    if m is None or m.kind != TMPFS or m.size is None or m.size >= min_temp:
        return []
    how = f"TMPDIR={w.getenv('TMPDIR')}" if w.getenv("TMPDIR") else "TMPDIR is unset, so"
    return [Finding(TEMP_TOO_SMALL, w.name, m.target,
                    f"{how} temp files go to tmpfs {m.target} of {human_size(m.size)}, below {human_size(min_temp)}: "
                    "a download staged through tempfile fails with ENOSPC (seed 003)",
                    "set TMPDIR to a dir on a disk-backed volume, e.g. /app/cache/.tmp (`volinit fix` writes it), "
                    "or raise the tmpfs size=")]


def _volume_gated(w: Workload, m: Mount) -> bool:
    return w.gated and (m.source in w.gated_volumes or "" in w.gated_volumes)


def volume_not_owned(w: Workload) -> list[Finding]:
    """seed 003 (first failure): a non-root service writes to a named volume no init fixes."""
    if not w.user.known or w.user.root:
        return []
    out: list[Finding] = []
    owner = f"{w.user.uid}:{w.user.gid if w.user.gid is not None else w.user.uid}"
    for m in w.mounts:
        if m.kind != VOLUME or m.read_only or _volume_gated(w, m):
            continue
        vol = m.source or m.target
        if m.image_dir is None:
            why = (f"the image is not present, so whether Docker copies an owner into a new volume is unknown; "
                   f"a volume Docker or an older root container made is 0:0, and {_uid(w)} cannot write it")
        elif m.no_copy or not m.image_dir:
            cause = "nocopy is set" if m.no_copy else f"the image has no {m.target}"
            why = f"{cause}, so a new volume's root is 0:0 and {_uid(w)} cannot write it"
        else:
            img = m.image_owner or (0, 0)
            mode = m.image_mode if m.image_mode is not None else 0o755
            if may_write(w.user.uid, (w.user.gid, *w.groups), img, mode) is False:
                why = (f"a new volume takes the image's {m.target} ({img[0]}:{img[1]} mode {mode:04o}), "
                       f"which {_uid(w)} cannot write")
            elif m.exists is False:
                continue  # Docker copies the image's owner into the fresh volume: fine
            else:
                first = "it already exists" if m.exists else "if it already exists"
                why = (f"{first}: Docker copies the image's owner ({img[0]}:{img[1]}) only into a new volume; "
                       f"one an older root container wrote stays 0:0 for {_uid(w)}")
        out.append(Finding(VOLUME_NOT_OWNED, w.name, m.target,
                           f"named volume {vol} at {m.target}: {why} (seed 003)",
                           FIX_OWN.format(volume=vol, owner=owner)))
    return out


def state_not_persistent(w: Workload) -> list[Finding]:
    """seed 004: data that must outlive the container on a tmpfs or the container's layer."""
    out: list[Finding] = []
    seen: set[str] = set()
    for path in w.persist:
        p = _abs(w, path)
        if p in seen:
            continue
        seen.add(p)
        m = _on_mount(w, p)
        if m is not None and m.kind in (VOLUME, BIND):
            continue
        where = f"tmpfs {m.target}" if m is not None and m.kind == TMPFS else (
            f"scratch {m.target}" if m is not None and m.kind == SCRATCH else "the container's own layer")
        out.append(Finding(STATE_NOT_PERSISTENT, w.name, p,
                           f"{p} must outlive the container but is on {where}: it is lost on restart and not "
                           "shared between replicas (seed 004)",
                           f"mount a named volume at {p}"))
    for path in w.image_volumes:
        p = posixpath.normpath(path)
        m = _on_mount(w, p)
        if p in seen or m is None or m.kind not in (TMPFS, SCRATCH):
            continue
        seen.add(p)
        out.append(Finding(STATE_NOT_PERSISTENT, w.name, p,
                           f"the image declares VOLUME {p} but the service covers it with {m.kind} {m.target}: "
                           "its data is lost on restart (seed 004)",
                           f"mount a named volume at {p} instead of the {m.kind}"))
    return out


def human_size(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"

