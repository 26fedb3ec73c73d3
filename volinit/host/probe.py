"""The dynamic proof: run the probe in a throwaway copy of each service's container.

Each probe container has the service's image, user, read_only root, tmpfs mounts, existing
volumes, existing bind sources, working dir, environment and capabilities; its entrypoint
is the static probe binary (copied out of the volinit image, mounted read-only), so none of
the service's code runs and images without a shell work too. It must not change the user's
world: a named volume that does not exist is not mounted (Docker would create it), a bind
source that does not exist is not mounted (Docker would create the host dir), every volume
is mounted nocopy (copy-up would write into an empty volume), and each container goes with
its anonymous volumes. On a volume, the only change is a probe file the probe removes.
"""

from __future__ import annotations

import json
import os
import posixpath
import secrets
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

from volinit.errors import UsageError
from volinit.host.image import LABEL
from volinit.host.rules import DOWNLOAD_VARS, human_size, may_write
from volinit.host.workload import (
    BIND,
    CACHE_UNWRITABLE,
    NO_TEMP_DIR,
    STATE_NOT_PERSISTENT,
    TEMP_TOO_SMALL,
    TMPFS,
    VOLUME,
    VOLUME_NOT_OWNED,
    Finding,
    Mount,
    Workload,
)

IMAGE_ENV = "VOLINIT_IMAGE"
DEFAULT_IMAGE = "volinit:latest"
PROBE_IN_IMAGE = "/usr/local/lib/volinit/probe"
PROBE_TARGET = "/.volinit-probe"
TIMEOUT = 60


@dataclass
class ProbeResult:
    """What one probe container reported, and what check could not mount."""

    service: str
    facts: list[dict] = field(default_factory=list)
    error: str = ""  # the probe could not run: why
    not_created: list[str] = field(default_factory=list)  # notes on missing volumes / bind sources
    skipped: set[str] = field(default_factory=set)  # mount targets not mounted in the probe


def probe_binary(client: Any, image: Optional[str] = None) -> tuple[str, str]:
    """(host dir, path of the probe binary in it), copied out of the volinit image.
    The caller removes the dir."""
    import docker.errors

    ref = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise UsageError("the volinit image", ref, "is not on this Docker engine; the dynamic check runs its probe",
                         f"build it (docker build -t {ref} .) or pull it, set {IMAGE_ENV}, "
                         "or pass --static to check the configuration alone") from None
    container = client.containers.create(ref, entrypoint=["/volinit-check-never-runs"], command=[],
                                         network_disabled=True, labels={LABEL: "probe-copy"},
                                         name=f"volinit-check-copy-{secrets.token_hex(4)}")
    tmp = tempfile.mkdtemp(prefix="volinit-probe-")
    try:
        stream, _ = container.get_archive(PROBE_IN_IMAGE)
        tar_path = os.path.join(tmp, "probe.tar")
        with open(tar_path, "wb") as f:
            for chunk in stream:
                f.write(chunk)
        with tarfile.open(tar_path) as tar:
            member = tar.next()
            src = tar.extractfile(member) if member is not None else None
            if src is None:
                raise docker.errors.NotFound("not a file")
            dest = os.path.join(tmp, "volinit-probe")
            with open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
        os.unlink(tar_path)
    except docker.errors.NotFound:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError("the volinit image", ref, f"has no probe at {PROBE_IN_IMAGE} (an older image)",
                         "rebuild it from this checkout, or pass --static") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        container.remove(v=True, force=True)
    # read and run by the service's uid through the bind mount; nobody can write it
    os.chmod(dest, 0o755)  # noqa: S103
    os.chmod(tmp, 0o755)  # noqa: S103
    return tmp, dest


def container_kwargs(w: Workload, probe: str, name: str) -> tuple[dict[str, Any], ProbeResult]:
    """The SDK's `containers.create` arguments mirroring the service, and what was left out."""
    from docker.types import Mount as DockerMount

    res = ProbeResult(w.name)
    mounts = [DockerMount(target=PROBE_TARGET, source=probe, type="bind", read_only=True)]
    tmpfs: dict[str, str] = {}
    for m in w.mounts:
        if m.kind == TMPFS:
            opts = []
            if m.size is not None:
                opts.append(f"size={m.size}")
            if m.mode is not None:
                opts.append(f"mode={m.mode:o}")
            if m.owner is not None:
                opts += [f"uid={m.owner[0]}", f"gid={m.owner[1]}"]
            if m.read_only:
                opts.append("ro")
            tmpfs[m.target] = ",".join(opts)
        elif m.kind == VOLUME:
            if not m.source or m.exists is False:
                res.skipped.add(m.target)
                if m.source:
                    res.not_created.append(_fresh_volume_note(w, m))
                continue
            # nocopy: copy-up into an empty volume would change it; the probe reads it as it is
            mounts.append(DockerMount(target=m.target, source=m.source, type="volume", read_only=m.read_only,
                                      no_copy=True))
        elif m.kind == BIND:
            if not m.source or not os.path.exists(m.source):
                res.skipped.add(m.target)
                res.not_created.append(f"bind source {m.source} does not exist (not mounted: Docker would create it "
                                       "as root on the host)")
                continue
            mounts.append(DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only))
    args: list[str] = []
    for m in w.mounts:
        if m.kind == VOLUME and m.target not in res.skipped:
            args += ["--volume", m.target]
    for p in w.persist:
        args += ["--persist", posixpath.normpath(posixpath.join(w.working_dir or "/", p))]
    kw: dict[str, Any] = {
        "image": w.image,
        "entrypoint": [PROBE_TARGET],
        "command": args,
        "name": name,
        "labels": {LABEL: w.name},
        "environment": dict(w.env),
        "read_only": w.read_only_root,
        "mounts": mounts,
        "tmpfs": tmpfs,
        "network_mode": "none",
        "working_dir": w.working_dir or None,
    }
    if w.run_as:
        kw["user"] = w.run_as
    if w.cap_drop:
        kw["cap_drop"] = list(w.cap_drop)
    if w.cap_add:
        kw["cap_add"] = list(w.cap_add)
    extra = [str(g) for g in w.groups]
    if extra:
        kw["group_add"] = extra
    return kw, res


def _fresh_volume_note(w: Workload, m: Mount) -> str:
    if m.no_copy or m.image_dir is False:
        how = "Docker will make its root 0:0" + (" (nocopy)" if m.no_copy else f" (the image has no {m.target})")
    elif m.image_dir and m.image_owner is not None:
        mode = f" mode {m.image_mode:04o}" if m.image_mode is not None else ""
        how = f"Docker will copy the image's {m.target} into it, owned {m.image_owner[0]}:{m.image_owner[1]}{mode}"
    else:
        how = "what Docker puts in it depends on the image, which was not read"
    gate = f"; {w.gate} runs first and fixes it" if w.gated and (m.source in w.gated_volumes) else ""
    return f"volume {m.source} is not created yet (not mounted in the probe): {how}{gate}"


def run_probes(workloads: list[Workload], client: Any, probe: str, workers: int = 8) -> dict[str, ProbeResult]:
    """One probe container per workload, concurrently; every container is removed."""
    todo = [w for w in workloads if not w.init and w.image_present]
    results: dict[str, ProbeResult] = {}
    if not todo:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
        for res in pool.map(lambda w: _probe_one(w, client, probe), todo):
            results[res.service] = res
    return results


def _probe_one(w: Workload, client: Any, probe: str) -> ProbeResult:
    import docker.errors

    from volinit.host.engine import reason

    name = f"volinit-check-{secrets.token_hex(5)}"
    kw, res = container_kwargs(w, probe, name)
    container = None
    try:
        container = client.containers.create(**kw)
        container.start()
        status = container.wait(timeout=TIMEOUT)
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        err = container.logs(stdout=False, stderr=True).decode("utf-8", "replace").strip()
        code = int(status.get("StatusCode", 1))
        for line in out.splitlines():
            try:
                fact = json.loads(line)
            except ValueError:
                continue
            if isinstance(fact, dict):
                res.facts.append(fact)
        if code != 0 and not res.facts:
            res.error = f"the probe exited {code}" + (f": {err.splitlines()[-1]}" if err else "")
    except docker.errors.APIError as exc:
        res.error = f"Docker refused the probe container: {str(exc.explanation or exc).splitlines()[0]}"
    except Exception as exc:  # a timeout or a vanished daemon: a note for this service, not a crash
        res.error = f"the probe did not finish: {reason(exc)}"
    finally:
        try:
            (container or client.containers.get(name)).remove(v=True, force=True)
        except Exception:  # noqa: S110 - nothing was created, or it is already gone
            pass
    return res


# --- turning facts into findings ---------------------------------------------------------

def _under(path: str, targets: set[str]) -> bool:
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


def _deferred(w: Workload, res: ProbeResult) -> set[str]:
    """Mount targets whose content the probe cannot judge: not created yet, or fixed by the
    init that runs before the service (it chowns them and creates their dirs)."""
    out = set(res.skipped)
    for m in w.mounts:
        if m.kind == VOLUME and w.gated and (m.source in w.gated_volumes or "" in w.gated_volumes):
            out.add(m.target)
    return out


def _shim(w: Workload) -> bool:
    return any(posixpath.basename(a) == "volinit-entrypoint" for a in w.entrypoint[:1])


def dynamic_findings(w: Workload, res: ProbeResult, *, min_temp: int, every: bool
                     ) -> tuple[list[Finding], set[tuple[str, str]]]:
    """(findings the probe proved, (rule, path) pairs it proved fine, "*" for any path)."""
    found: list[Finding] = []
    cleared: set[tuple[str, str]] = set()
    if res.error:
        return found, cleared
    deferred = _deferred(w, res)
    who = next((f for f in res.facts if f.get("fact") == "id"), {})
    uid = f"uid {who.get('uid')}:{who.get('gid')}" if who else "the service's user"

    temps = [f for f in res.facts if f.get("fact") == "temp"]
    chosen = next((f for f in res.facts if f.get("fact") == "tempdir"), None)
    before = []
    for t in temps:
        if t.get("ok"):
            break
        before.append(t)
    waits = [t for t in before if _under(t["path"], deferred) or (_shim(w) and t.get("how") == "TMPDIR")]
    if chosen is not None and chosen.get("path") is None and not waits and temps:
        tried = ", ".join(f"{t['path']} ({t.get('errno') or 'fails'})" for t in temps)
        found.append(Finding(NO_TEMP_DIR, w.name, temps[0]["path"],
                             f"probed as {uid}: tempfile finds no usable dir, tried {tried} (seed 000)",
                             "mount a tmpfs at /tmp (tmpfs: [/tmp]) or set TMPDIR to a dir on a volume the service "
                             "owns (`volinit fix` writes both)", "dynamic"))
    elif chosen is not None and chosen.get("path") is not None:
        cleared.add((NO_TEMP_DIR, "*"))
        if not waits and (every or any(w.getenv(v) for v in DOWNLOAD_VARS)):
            free = int(chosen.get("free") or 0)
            if free < min_temp:
                kind = "tmpfs " if chosen.get("fstype") == "tmpfs" else ""
                found.append(Finding(TEMP_TOO_SMALL, w.name, chosen["path"],
                                     f"probed: temp files go to {kind}{chosen['path']} with {human_size(free)} free, "
                                     f"below {human_size(min_temp)}: a download staged through tempfile fails with "
                                     "ENOSPC (seed 003)",
                                     "set TMPDIR to a dir on a disk-backed volume, e.g. /app/cache/.tmp "
                                     "(`volinit fix` writes it), or raise the tmpfs size=", "dynamic"))
            else:
                cleared.add((TEMP_TOO_SMALL, "*"))

    caches = [f for f in res.facts if f.get("fact") == "cache"]
    home = next((f for f in caches if f.get("var") == "HOME"), None)
    # a cache on a volume whose root the uid cannot write is that volume's finding, not a second one
    unowned = {v["path"] for v in res.facts if v.get("fact") == "volume" and v.get("exists") and not v.get("ok")}
    names: dict[str, list[str]] = {}
    for c in caches:
        names.setdefault(c.get("path", ""), []).append(c.get("var", ""))
    seen: set[str] = set()
    for c in caches:
        var, path = c.get("var", ""), c.get("path", "")
        if var == "HOME" or path in seen or _under(path, unowned):
            continue
        seen.add(path)
        var = "=".join(names[path]) if var != "HOME/.cache" else var
        if var == "HOME/.cache" and w.home_source not in ("environment", "image ENV"):
            # Docker's own HOME: only a home that does not exist and cannot be made counts
            if home is None or home.get("exists") or home.get("ok"):
                continue
        if _under(path, deferred) or (not c.get("exists") and _shim(w)):
            continue
        if c.get("ok"):
            cleared.add((CACHE_UNWRITABLE, path))
            continue
        if c.get("exists"):
            why = f"is {c.get('uid')}:{c.get('gid')} mode {int(c.get('mode', 0)):04o} ({c.get('errno')})"
        else:
            why = (f"does not exist and its nearest parent {c.get('parent')} "
                   f"({c.get('parent_uid')}:{c.get('parent_gid')} mode {int(c.get('parent_mode', 0)):04o}) "
                   f"takes no new dir ({c.get('errno')})")
        label = "XDG_CACHE_HOME is unset, so caches go to $HOME/.cache, " if var == "HOME/.cache" else f"{var}="
        found.append(Finding(CACHE_UNWRITABLE, w.name, path,
                             f"probed as {uid}: {label}{path} {why} (seed 002)",
                             ("set XDG_CACHE_HOME (and HOME) to a dir on a volume the service owns"
                              if var == "HOME/.cache" else
                              f"point {var.split('=')[0]} at a dir on a volume the service owns")
                             + " (`volinit fix` writes it)", "dynamic"))

    mounts = {m.target: m for m in w.mounts}
    for v in (f for f in res.facts if f.get("fact") == "volume"):
        m = mounts.get(v.get("path", ""))
        if m is None or m.read_only or v.get("path") in deferred or not v.get("exists"):
            continue
        if v.get("ok"):
            cleared.add((VOLUME_NOT_OWNED, m.target))
            continue
        owner, mode = (int(v.get("uid", 0)), int(v.get("gid", 0))), int(v.get("mode", 0))
        if v.get("empty") and not m.no_copy and m.image_dir and m.image_owner is not None:
            # an empty volume takes the image's dir at the next real start (copy-up)
            img_mode = m.image_mode if m.image_mode is not None else 0o755
            if may_write(w.user.uid, (w.user.gid, *w.groups), m.image_owner, img_mode):
                cleared.add((VOLUME_NOT_OWNED, m.target))
                continue
        found.append(Finding(VOLUME_NOT_OWNED, w.name, m.target,
                             f"probed as {uid}: volume {m.source}'s root is {owner[0]}:{owner[1]} mode {mode:04o} "
                             f"and takes no file ({v.get('errno')}) (seed 003)",
                             f"gate the service on the volinit init service (`volinit fix` writes it), or "
                             f"volinit repair {m.source} --owner {_owner(w)}",
                             "dynamic"))

    for p in (f for f in res.facts if f.get("fact") == "persist"):
        path = p.get("path", "")
        if _under(path, deferred):
            continue
        fstype = p.get("fstype")
        if fstype in ("tmpfs", "overlay"):
            where = "a tmpfs" if fstype == "tmpfs" else "the container's own layer (overlay)"
            found.append(Finding(STATE_NOT_PERSISTENT, w.name, path,
                                 f"probed: {path} must outlive the container but is on {where}: lost on restart "
                                 "and not shared between replicas (seed 004)",
                                 f"mount a named volume at {path}", "dynamic"))
        elif fstype:
            cleared.add((STATE_NOT_PERSISTENT, path))
    return found, cleared


def _owner(w: Workload) -> str:
    uid = w.user.uid if w.user.known else "UID"
    return f"{uid}:{w.user.gid if w.user.gid is not None else uid}"


def merge(static: list[Finding], dynamic: list[Finding], cleared: set[tuple[str, str, str]]) -> list[Finding]:
    """Proof beats inference: a dynamic finding replaces the static one for the same rule,
    service and path; a static finding the probe proved wrong goes."""
    proven = {(f.id, f.service, f.path) for f in dynamic}
    out = []
    for f in static:
        key = (f.id, f.service, f.path)
        if key in proven or key in cleared or (f.id, f.service, "*") in cleared:
            continue
        out.append(f)
    return out + dynamic
