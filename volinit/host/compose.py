"""Read a compose project into workloads, through the real `docker compose config`.

Compose itself does interpolation, `.env`, profiles, `extends`, `include` and the merge of
several `-f` files; reading its rendered output means check sees the project exactly as
`docker compose up` would. YAML output, not `--format json`: compose v2.40 drops
service-level `x-` fields from its JSON. Facts the compose file does not hold (the image's
USER, ENV, VOLUMEs, the owner of each mount point, the passwd entry behind a user name) come
from the local image through the Docker SDK. This module decides no findings.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

from volinit.errors import UsageError, one_line
from volinit.host.workload import BIND, CONFIG, TMPFS, VOLUME, Mount, User, Workload

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
ENV_PATHS = ("TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME")
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
              "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


class ComposeError(UsageError):
    """Compose rejected the project: its own message, on one line."""


@dataclass(frozen=True)
class Project:
    name: str
    workloads: tuple[Workload, ...]
    config: dict
    files: tuple[str, ...]
    engine: str = ""  # "" when an engine answered, else why the image facts are missing


def compose_command(files: list[str], project_directory: Optional[str], profiles: list[str]) -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        raise UsageError("docker compose", "", "the docker client is not on PATH",
                         "install Docker with the compose plugin (docker compose version)")
    cmd = [docker, "compose"]
    for f in files:
        cmd += ["-f", f]
    if project_directory:
        cmd += ["--project-directory", project_directory]
    for p in profiles:
        cmd += ["--profile", p]
    return cmd


def render(files: list[str], project_directory: Optional[str], profiles: list[str]) -> dict:
    """compose's rendered config as a dict; ComposeError with compose's message if it refuses."""
    import yaml

    cmd = compose_command(files, project_directory, profiles) + ["config"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=120)
    except subprocess.TimeoutExpired:
        raise ComposeError("docker compose config", "", "did not answer in 120 s", "run it by hand") from None
    if proc.returncode != 0:
        text = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        if "is not a docker command" in text or "unknown command" in text:
            raise UsageError("docker compose", "", "the compose plugin is missing",
                             "install docker-compose-plugin (docker compose version)")
        raise ComposeError("compose rejected the project", "", one_line(text or f"exit {proc.returncode}"),
                           "fix the compose file; `docker compose config` shows the same")
    doc = yaml.safe_load(proc.stdout)
    if not isinstance(doc, dict):
        raise ComposeError("docker compose config", "", "printed no project", "run it by hand")
    return doc


def compose_files(files: list[str], project_directory: Optional[str]) -> tuple[str, ...]:
    """The files compose reads, absolute, first one first (as compose finds them)."""
    if files:
        return tuple(os.path.abspath(f) for f in files)
    env = os.environ.get("COMPOSE_FILE")
    if env:
        sep = os.environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
        base = project_directory or os.getcwd()
        return tuple(os.path.abspath(os.path.join(base, f)) for f in env.split(sep) if f)
    start = os.path.abspath(project_directory or os.getcwd())
    cur = start
    while True:
        for name in COMPOSE_NAMES:
            first = os.path.join(cur, name)
            if os.path.isfile(first):
                stem, ext = os.path.splitext(first)
                override = f"{stem}.override{ext}"
                return (first, override) if os.path.isfile(override) else (first,)
        if project_directory or os.path.dirname(cur) == cur:
            return ()
        cur = os.path.dirname(cur)


def load_project(files: list[str], project_directory: Optional[str], profiles: list[str],
                 services: list[str], *, client: Any = None, engine_why: str = "") -> Project:
    """The project as compose renders it, one Workload per service (or per named service).

    client: a Docker SDK client, for image facts and which volumes exist; None reads the
    compose file alone (each workload then notes why its image facts are missing).
    """
    config = render(files, project_directory, profiles)
    name = str(config.get("name") or "")
    svcs: dict = config.get("services") or {}
    unknown = [s for s in services if s not in svcs]
    if unknown:
        raise UsageError("--service", unknown[0], "is not a service of this project (or its profile is not active)",
                         f"services: {', '.join(sorted(svcs)) or 'none'}")
    from volinit.host.image import ImageReader

    reader = ImageReader(client) if client is not None else None
    chosen = [s for s in svcs if not services or s in services]
    try:
        # each service's image and volume questions are round trips to the engine: ask in parallel
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(chosen)))) as pool:
            workloads = tuple(pool.map(lambda s: _workload(name, s, svcs[s], config, reader, client, engine_why),
                                       chosen))
    finally:
        if reader is not None:
            reader.close()
    return Project(name, workloads, config, compose_files(files, project_directory), engine_why)


def image_ref(project: str, service: str, svc: dict) -> tuple[str, bool]:
    """(the image the service runs, whether compose builds it)."""
    if svc.get("image"):
        return str(svc["image"]), "build" in svc
    return f"{project}-{service}", True


def parse_size(text: str) -> Optional[int]:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in SIZE_UNITS:
        return None
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).lower()])


def _tmpfs_mount(target: str, opts: dict[str, str]) -> Mount:
    size = parse_size(opts["size"]) if "size" in opts else None
    mode = int(opts["mode"], 8) if re.fullmatch(r"[0-7]{1,4}", opts.get("mode", "")) else None
    owner = None
    uid, gid = opts.get("uid", "0"), opts.get("gid", "0")
    if ("uid" in opts or "gid" in opts) and uid.isdigit() and gid.isdigit():
        owner = (int(uid), int(gid))
    return Mount(target=posixpath.normpath(target), kind=TMPFS, read_only="ro" in opts, size=size,
                 mode=mode, owner=owner)


def _tmpfs_entries(value: Any) -> list[Mount]:
    items = [value] if isinstance(value, str) else list(value or ())
    out = []
    for item in items:
        target, _, rest = str(item).partition(":")
        opts: dict[str, str] = {}
        for part in rest.split(","):
            if part:
                key, _, val = part.partition("=")
                opts[key.strip()] = val.strip()
        out.append(_tmpfs_mount(target, opts))
    return out


def _mounts(svc: dict, config: dict, client: Any) -> list[Mount]:
    out = _tmpfs_entries(svc.get("tmpfs"))
    vols_cfg = config.get("volumes") or {}
    for v in svc.get("volumes") or ():
        if not isinstance(v, dict):
            continue
        kind, target = v.get("type"), posixpath.normpath(str(v.get("target") or ""))
        ro = bool(v.get("read_only"))
        if kind == "volume":
            key = v.get("source") or ""
            nocopy = bool((v.get("volume") or {}).get("nocopy"))
            if not key:  # an anonymous volume: Docker makes it fresh for each new container
                out.append(Mount(target, VOLUME, "", ro, exists=False, no_copy=nocopy))
                continue
            real = str((vols_cfg.get(key) or {}).get("name") or key)
            out.append(Mount(target, VOLUME, real, ro, exists=_volume_exists(client, real), no_copy=nocopy))
        elif kind == "bind":
            src = str(v.get("source") or "")
            out.append(Mount(target, BIND, src, ro, exists=os.path.exists(src) if src else None))
        elif kind == "tmpfs":
            t = v.get("tmpfs") or {}
            opts = {k: str(t[k]) for k in ("size", "mode") if k in t}
            if "mode" in t and isinstance(t["mode"], int):
                opts["mode"] = format(t["mode"], "o")
            out.append(_tmpfs_mount(target, opts))
    for key, default_dir in (("configs", "/"), ("secrets", "/run/secrets/")):
        for c in svc.get(key) or ():
            src = str(c.get("source") if isinstance(c, dict) else c)
            target = str((c.get("target") if isinstance(c, dict) else None) or f"{default_dir}{src}")
            if not target.startswith("/"):
                target = f"/run/secrets/{target}" if key == "secrets" else f"/{target}"
            out.append(Mount(posixpath.normpath(target), CONFIG, str(src), True))
    return out


def _volume_exists(client: Any, name: str) -> Optional[bool]:
    if client is None:
        return None
    import docker.errors

    try:
        client.volumes.get(name)  # inspect only: check never creates a volume
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError:
        return None
    return True


def _argv(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(x) for x in value)


def _is_init(dep: dict, project: str, dname: str) -> bool:
    """A one-shot that fixes ownership: the volinit image, or a command that chowns."""
    ref, _ = image_ref(project, dname, dep)
    if "volinit" in ref.lower():
        return True
    words = " ".join(_argv(dep.get("entrypoint")) + _argv(dep.get("command")))
    return re.search(r"\bchown\b", words) is not None


def _gate(project: str, svc: dict, svcs: dict) -> tuple[str, tuple[str, ...]]:
    gates: list[str] = []
    volumes: list[str] = []
    deps = svc.get("depends_on") or {}
    for dname, cond in (deps.items() if isinstance(deps, dict) else ()):
        if (cond or {}).get("condition") != "service_completed_successfully" or dname not in svcs:
            continue
        dep = svcs[dname]
        if not _is_init(dep, project, dname):
            continue
        gates.append(dname)
        for v in dep.get("volumes") or ():
            if isinstance(v, dict) and v.get("type") == "volume" and v.get("source"):
                volumes.append(str(v["source"]))
    return ", ".join(gates), tuple(volumes)


def _workload(project: str, sname: str, svc: dict, config: dict, reader: Any, client: Any,
              engine_why: str) -> Workload:
    from volinit.host.image import resolve_user

    ref, built = image_ref(project, sname, svc)
    notes: list[str] = []
    init = _is_init(svc, project, sname) and _gates_someone(sname, config.get("services") or {})
    # an init is neither judged nor probed: reading its image would only cost time
    facts = reader.get(ref, build_hint=built) if reader is not None and not init else None
    if facts is None and not init:
        notes.append(f"image facts not read: {engine_why or 'no Docker engine'}")
    elif facts is not None and not facts.present:
        notes.append(facts.why)
    present = facts.present if facts is not None else None

    user_spec = str(svc.get("user") or (facts.user if facts is not None and facts.present else "") or "")
    if not user_spec and present is not True:
        user = User(None, unknown_why=notes[0] if notes else "image not read")
        home = ""
        extra: tuple[int, ...] = ()
    else:
        uid, gid, extra, home, why = resolve_user(user_spec, facts)
        source = "compose user:" if svc.get("user") else ("image Config.User" if user_spec else "image default (root)")
        user = User(uid, gid, source, why)
        if why:
            notes.append(why)
    extra = extra + tuple(int(g) for g in (svc.get("group_add") or ()) if str(g).isdigit())

    env: dict[str, str] = dict(facts.env) if facts is not None and facts.present else {}
    for key, value in (svc.get("environment") or {}).items():
        if value is not None:  # null: passed through from a shell where it is unset
            env[key] = str(value)
    svc_env = {k for k, v in (svc.get("environment") or {}).items() if v is not None}
    if "HOME" in svc_env:
        home, home_source = env["HOME"], "environment"
    elif "HOME" in env:
        home, home_source = env["HOME"], "image ENV"
    elif home:
        home_source = "passwd"
    elif present:
        home, home_source = "/", "default"
    else:
        home_source = ""
    working_dir = str(svc.get("working_dir") or (facts.working_dir if facts is not None and facts.present else "")
                      or "/")
    mounts = _mounts(svc, config, client)
    gate, gated_volumes = _gate(project, svc, config.get("services") or {})
    gated_real = tuple(str(((config.get("volumes") or {}).get(k) or {}).get("name") or k) for k in gated_volumes)

    x = svc.get("x-volinit") or {}
    persist = tuple(str(p) for p in (x.get("persist") or ())) if isinstance(x, dict) else ()

    if facts is not None and facts.present:
        paths = {"/tmp", "/var/tmp", "/usr/tmp", working_dir, *persist}
        paths |= {posixpath.join(working_dir, env[k]) for k in ENV_PATHS if env.get(k)}
        paths |= {posixpath.join(working_dir, d) for d in re.split(r"[\s:]+", env.get("VOLINIT_DIRS", "")) if d}
        if home:
            paths |= {home, posixpath.join(home, ".cache")}
        _stat_with_parents(facts, paths | {m.target for m in mounts})
        mounts = [_with_image_dir(m, facts) for m in mounts]

    deploy = svc.get("deploy") or {}
    replicas = int(deploy.get("replicas") or svc.get("scale") or 1)
    entrypoint = _argv(svc.get("entrypoint")) or (facts.entrypoint if facts is not None and facts.present else ())
    return Workload(
        name=sname, image=ref, user=user, read_only_root=bool(svc.get("read_only")),
        mounts=tuple(mounts), env=tuple(sorted(env.items())), working_dir=working_dir, home=home,
        replicas=replicas, gated=bool(gate), gate=gate,
        image_volumes=facts.volumes if facts is not None and facts.present else (),
        persist=persist, source_file="", groups=extra, home_source=home_source, image_present=present,
        image_paths=facts.known_stats() if facts is not None and facts.present else (),
        gated_volumes=gated_real, entrypoint=entrypoint, notes=tuple(notes),
        init=init,
        run_as=str(svc.get("user") or ""), cap_drop=_argv(svc.get("cap_drop")), cap_add=_argv(svc.get("cap_add")))


def _stat_with_parents(facts: Any, paths: set[str]) -> None:
    """Stat each path in the image, and its parents up to the first that exists; each stat is
    a round trip that mounts the container's filesystem, so a level's stats go in parallel."""
    todo = {posixpath.normpath(p) for p in paths}
    with ThreadPoolExecutor(max_workers=8) as pool:
        while todo:
            level = sorted(todo)
            found = dict(zip(level, pool.map(facts.stat, level), strict=True))
            todo = {posixpath.dirname(p) for p, info in found.items() if info is None and p != "/"}


def _gates_someone(sname: str, svcs: dict) -> bool:
    for other in svcs.values():
        deps = other.get("depends_on") or {}
        cond = deps.get(sname) if isinstance(deps, dict) else None
        if cond and cond.get("condition") == "service_completed_successfully":
            return True
    return False


def _with_image_dir(m: Mount, facts: Any) -> Mount:
    if m.kind != VOLUME:
        return m
    info = facts.stat(m.target)
    if info is None or not info.is_dir:
        return Mount(m.target, m.kind, m.source, m.read_only, m.size, m.exists, image_dir=False,
                     no_copy=m.no_copy)
    return Mount(m.target, m.kind, m.source, m.read_only, m.size, m.exists, image_dir=True,
                 image_owner=(info.uid, info.gid), image_mode=info.mode, no_copy=m.no_copy)
