"""`volinit repair`: fix old named volumes from the host by running the volinit image on them.

A volume made before the service went non-root is full of root-owned files; the init
service only walks when the volume's root is wrong, so a volume whose root someone already
chowned by hand stays broken below it. Repair runs the same image with `chown: always`.

This is the only module that imports `docker`, and only inside functions: the init
container never needs the SDK, and the core install does not ship it. Everything is
checked (flags, daemon, image, every volume, running users of every volume) before the
first container starts, so a refusal changes nothing. A named volume can be a bind mount of
a host directory (the local driver's `o=bind`): repair names that directory and refuses
unless --force, since the chown would land on the host's own files.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, TextIO

from volinit.errors import EXIT_OK, OperationError, UsageError, flag_errors
from volinit.spec import Owner, parse_duration, parse_owner, parse_rel_dir

IMAGE_ENV = "VOLINIT_IMAGE"
DEFAULT_IMAGE = "volinit:latest"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
MOUNT_ROOT = "/repair"
LABEL = "io.volinit.repair"  # on every repair container: its value is the volume's name
CAPS = ("CHOWN", "FOWNER", "DAC_OVERRIDE")  # all the image needs to chown and create dirs

# Docker's own rule for local volume names. It also keeps a path such as /etc from being
# taken for a bind mount of the host's directory, which the repair would then chown.
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


@dataclass(frozen=True)
class Job:
    """One volume to repair: where the container mounts it and the volinit command it runs."""

    volume: str
    target: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    image: str
    owner: Owner
    jobs: tuple[Job, ...]
    force: bool


# Docker's image reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest]
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::\w[\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,64}")


def plan(volumes: list[str], owner: str, dirs: list[str], prune: str | None,
         image: str | None, force: bool) -> Plan:
    """Validate the flags into a Plan; raises UsageError (exit 2) before Docker is touched."""
    rels: list[str] = []
    with flag_errors():
        own = parse_owner(owner, "--owner")
        for rel in dirs:
            norm = parse_rel_dir(rel, f"--dir {rel}")
            if norm not in rels:
                rels.append(norm)
        if prune is not None:
            parse_duration(prune, "--prune")
    tail = ["--owner", str(own), "--chown", "always"]
    for rel in rels:
        tail += ["--dir", rel]
    if prune is not None:
        if not rels:
            raise UsageError("--prune", "", "given without --dir",
                             "--prune applies to each --dir, e.g. --dir .tmp --prune 24h")
        tail += ["--prune", prune.strip()]
    if not volumes:
        raise UsageError("VOLUME", "", "no volume named", "e.g. volinit repair myapp_cache --owner 1000:1000")
    names: list[str] = []
    for name in volumes:
        if not _VOLUME_NAME.fullmatch(name):
            raise UsageError("volume name", repr(name), "not a Docker volume name",
                             "name a volume from `docker volume ls`; repair never takes host paths")
        if name not in names:
            names.append(name)
    jobs = tuple(Job(n, f"{MOUNT_ROOT}/{n}", ("apply", f"{MOUNT_ROOT}/{n}", *tail)) for n in names)
    chosen = image if image is not None else (os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE)
    chosen = chosen.strip()
    if not chosen:
        raise UsageError("--image", "", "is empty", f"name an image, e.g. --image {DEFAULT_IMAGE}")
    if not (_REFERENCE.fullmatch(chosen) or _IMAGE_ID.fullmatch(chosen)):
        raise UsageError("--image" if image is not None else IMAGE_ENV, repr(chosen), "not an image reference",
                         f"e.g. {DEFAULT_IMAGE}, ghcr.io/volinit/volinit:0.1 or an image ID; names are lower case")
    return Plan(chosen, own, jobs, force)


def container_kwargs(job: Job, image: str, name: str) -> dict[str, Any]:
    """The Docker SDK's `containers.create` arguments for one job: the hardened init container."""
    from docker.types import Mount

    return {
        "image": image,
        "command": list(job.command),
        "name": name,
        "labels": {LABEL: job.volume},
        "mounts": [Mount(target=job.target, source=job.volume, type="volume", no_copy=True)],
        "user": "0:0",
        "read_only": True,
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "cap_add": list(CAPS),
        "security_opt": ["no-new-privileges"],
    }


def run(volumes: list[str], owner: str, dirs: list[str], prune: str | None,
        image: str | None, force: bool) -> int:
    """Repair each volume in its own container; the exit code is the first non-zero one."""
    from volinit.cli import error, say

    todo = plan(volumes, owner, dirs, prune, image, force)
    docker = _import_docker()
    host = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    client = _connect(docker, host)
    with _docker_errors(docker, host):
        _check_image(docker, client, todo.image)
        host_dirs = bound_host_dirs(_check_volumes(docker, client, todo.jobs))
        users = _running_users(client, todo.jobs)
        if (host_dirs or users) and not todo.force:
            raise _refusal(host_dirs, users)
        for vol, device in host_dirs.items():
            say(f"warning: volume {vol} is the host directory {device}; changing owners there anyway (--force)")
        for vol, names in users.items():
            say(f"warning: volume {vol} is in use by {', '.join(names)}; repairing anyway (--force)")

        first = EXIT_OK
        for job in todo.jobs:
            say(f"repairing volume {job.volume} with {todo.image}: owner {todo.owner}, chown always")
            code = _run_job(docker, client, todo.image, job, sys.stderr)
            if code != EXIT_OK:
                error(f"repair of volume {job.volume}: the volinit container exited with {code} "
                      "(its output is above; fix that and rerun)")
                first = first or code
        return first


def _import_docker() -> Any:
    try:
        import docker
        import docker.errors
    except ImportError:
        raise OperationError("cannot run repair", "", "the Docker SDK for Python is not installed",
                             "pip install 'volinit[docker]'") from None
    return docker


def _reason(exc: BaseException) -> str:
    """The OS-level cause buried in a docker/requests/urllib3 chain, else the first line."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        nxt = getattr(cur, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _unreachable(host: str, exc: BaseException) -> OperationError:
    why = _reason(exc)
    if "ermission denied" in why:
        fix = "add your user to the docker group and log in again, or run with sudo"
    else:
        fix = ("start the Docker engine, or set DOCKER_HOST to its socket, "
               "e.g. DOCKER_HOST=unix:///run/user/1000/docker.sock for rootless Docker")
    return OperationError("cannot reach the Docker daemon at", host, why, fix)


def _connect(docker: Any, host: str) -> Any:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK wraps some failures, and lets requests' own escape
        if isinstance(exc, docker.errors.DockerException) or _is_connection_error(exc):
            raise _unreachable(host, exc) from None
        raise
    return client


def _is_connection_error(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout))


@contextmanager
def _docker_errors(docker: Any, host: str) -> Iterator[None]:
    """A daemon that refuses or vanishes mid-run is the user's to fix: one line, no traceback."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise OperationError("Docker refused a request", "", str(exc.explanation or exc).splitlines()[0],
                             "see the Docker daemon's log") from None
    except Exception as exc:
        if _is_connection_error(exc):
            raise _unreachable(host, exc) from None
        raise


def _check_image(docker: Any, client: Any, image: str) -> None:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise OperationError("image", image, "not found on this Docker host",
                             f"build it in a volinit checkout with `docker build -t {image} .`, "
                             f"or `docker pull {image}`; or pass --image / set {IMAGE_ENV}") from None


def _check_volumes(docker: Any, client: Any, jobs: tuple[Job, ...]) -> dict[str, dict[str, Any]]:
    """Each volume's `docker volume inspect` document, by name; raises if any is missing."""
    found: dict[str, dict[str, Any]] = {}
    missing = []
    for job in jobs:
        try:
            found[job.volume] = client.volumes.get(job.volume).attrs
        except docker.errors.NotFound:
            missing.append(job.volume)
    if missing:
        raise OperationError("volume" if len(missing) == 1 else "volumes", ", ".join(missing),
                             "not found; nothing was changed",
                             "see `docker volume ls`; compose names volumes <project>_<name>, e.g. myapp_cache")
    return found


def bound_host_dirs(volumes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The host directory behind each volume that is one, by volume name.

    `docker volume create --driver local -o type=none -o o=bind -o device=/srv/data` (and
    compose's `driver_opts` of the same) makes a named volume that is a bind mount of a
    host directory: a repair would chown the host's own files. Only the local driver says
    so in its options; other drivers keep their data elsewhere.
    """
    dirs = {}
    for name, attrs in volumes.items():
        options = attrs.get("Options") or {}
        mount_opts = str(options.get("o", "")).split(",")
        if attrs.get("Driver") == "local" and ("bind" in mount_opts or "rbind" in mount_opts):
            dirs[name] = str(options.get("device") or attrs.get("Mountpoint") or "?")
    return dirs


def _refusal(host_dirs: dict[str, str], users: dict[str, list[str]]) -> OperationError:
    """One line for everything that stops a repair without --force."""
    reasons = [f"volume {v} is a bind mount of the host directory {d}, whose owners repair would change"
               for v, d in host_dirs.items()]
    reasons += [f"volume {v} is in use by running container{'s' if len(c) > 1 else ''} {', '.join(c)}"
                for v, c in users.items()]
    fixes = []
    if host_dirs:
        fixes.append(f"check that {', '.join(host_dirs.values())} holds only this service's data")
    if users:
        fixes.append("stop them first with docker stop NAME or docker compose stop")
    return OperationError("; ".join(reasons), "", "nothing was changed",
                          f"{', and '.join(fixes)}, or pass --force to repair anyway")


def _running_users(client: Any, jobs: tuple[Job, ...]) -> dict[str, list[str]]:
    """Running (or paused, or restarting) containers that mount each volume."""
    users: dict[str, list[str]] = {}
    for job in jobs:
        names = sorted(c.name for c in client.containers.list(filters={"volume": job.volume}))
        if names:
            users[job.volume] = names
    return users


def _run_job(docker: Any, client: Any, image: str, job: Job, out: TextIO) -> int:
    # Deferred: secrets loads hashlib and OpenSSL (5 MB in the image), and `volinit repair`
    # inside the image only needs to reach _import_docker's error.
    import secrets

    # A known name, so a Ctrl-C that lands while the create request is in flight still
    # finds and removes the container it made.
    name = f"volinit-repair-{job.volume}-{secrets.token_hex(3)}"
    container = None
    try:
        container = client.containers.create(**container_kwargs(job, image, name))
        container.start()
        relay(container.logs(stream=True, follow=True, stdout=True, stderr=True), out)
        # no request timeout: a walk of a large volume takes as long as it takes
        return int(container.wait(timeout=None).get("StatusCode", 1))
    finally:
        _remove(docker, client, container, name)


def _remove(docker: Any, client: Any, container: Any, name: str) -> None:
    try:
        (container or client.containers.get(name)).remove(force=True)
    except docker.errors.NotFound:
        pass
    except Exception as exc:  # cleanup must not hide the error (or the Ctrl-C) that got us here
        print(f"volinit: warning: could not remove container {name}: {_reason(exc)} (docker rm -f {name})",
              file=sys.stderr, flush=True)


def relay(chunks: Iterable[bytes], out: TextIO) -> None:
    """Copy a container's output to `out` line by line as it arrives (chunks split anywhere)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            out.write(line.decode("utf-8", "replace") + "\n")
        if lines:
            out.flush()
    if pending:
        out.write(pending.decode("utf-8", "replace") + "\n")
        out.flush()
