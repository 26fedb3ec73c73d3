"""What an image holds, read through the Docker SDK without running anything in it.

A container is created (never started) from the image, files and stats are read out with
get_archive, and the container goes with its anonymous volumes. Nothing of the image's own
code runs, so reading a hostile or broken image is as safe as `docker cp`.
"""

from __future__ import annotations

import base64
import json
import posixpath
import secrets
import tarfile
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from volinit.host.workload import PathInfo

LABEL = "io.volinit.check"
# Each archive request mounts the container's filesystem in the daemon: a few at once is
# faster than many (and stays inside the SDK's connection pool).
_ARCHIVE_CALLS = threading.BoundedSemaphore(6)  # on every container check creates, so a leftover is easy to find


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass
class ImageFacts:
    ref: str
    present: bool
    why: str = ""  # when not present: what to do
    user: str = ""  # Config.User
    env: dict[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    entrypoint: tuple[str, ...] = ()
    passwd: tuple[PasswdEntry, ...] = ()
    groups: tuple[tuple[str, int, tuple[str, ...]], ...] = ()  # (name, gid, members)
    _container: Any = None
    _stats: dict[str, Optional[PathInfo]] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stat(self, path: str) -> Optional[PathInfo]:
        """The image's own entry at path (symlinks followed), None when it is not there.
        Each path is asked once, however many services' threads want it."""
        path = posixpath.normpath(path)
        with self._lock:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            if path not in self._stats:
                with _ARCHIVE_CALLS:
                    self._stats[path] = _stat(self._container, path) if self._container is not None else None
            return self._stats[path]

    def known_stats(self) -> tuple[PathInfo, ...]:
        return tuple(i for i in self._stats.values() if i is not None)


class ImageReader:
    """One created container per image, removed by close()."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.facts: dict[str, ImageFacts] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, ref: str, *, build_hint: bool = False) -> ImageFacts:
        """Safe from several threads: each image is read once, by whoever asks first."""
        with self._lock:
            lock = self._locks.setdefault(ref, threading.Lock())
        with lock:
            if ref not in self.facts:
                self.facts[ref] = self._read(ref, build_hint)
            return self.facts[ref]

    def _read(self, ref: str, build_hint: bool) -> ImageFacts:
        import docker.errors

        try:
            img = self.client.images.get(ref)
        except (docker.errors.ImageNotFound, docker.errors.NotFound):
            how = "docker compose build" if build_hint else f"docker compose pull, or docker pull {ref}"
            return ImageFacts(ref, False, f"image {ref} is not present on this engine ({how})")
        except docker.errors.APIError as exc:  # e.g. a reference the engine cannot parse
            return ImageFacts(ref, False, f"image {ref} cannot be read: {exc.explanation or exc}")
        cfg = img.attrs.get("Config") or {}
        env = {}
        for item in cfg.get("Env") or ():
            key, _, value = item.partition("=")
            env[key] = value
        facts = ImageFacts(ref, True, user=cfg.get("User") or "", env=env,
                           volumes=tuple(sorted((cfg.get("Volumes") or {}).keys())),
                           working_dir=cfg.get("WorkingDir") or "",
                           entrypoint=tuple(cfg.get("Entrypoint") or ()))
        # the entrypoint is never run: create only, so nothing of the image executes
        try:
            facts._container = self.client.containers.create(
                img.id, entrypoint=["/volinit-check-never-runs"], command=[], network_disabled=True,
                labels={LABEL: "image-read"}, name=f"volinit-check-read-{secrets.token_hex(4)}")
        except docker.errors.APIError as exc:
            return ImageFacts(ref, False, f"image {ref} cannot be read: {exc.explanation or exc}")
        facts.passwd = tuple(_passwd(_read(facts._container, "/etc/passwd")))
        facts.groups = tuple(_groups(_read(facts._container, "/etc/group")))
        return facts

    def close(self) -> None:
        for facts in self.facts.values():
            if facts._container is not None:
                try:
                    facts._container.remove(v=True, force=True)
                except Exception:  # noqa: S110 - the reader must not hide the error that got us here
                    pass
                facts._container = None


def _archive(container: Any, path: str) -> tuple[Any, Optional[dict]]:
    """The raw streamed response of the archive endpoint: the caller reads its first member
    and closes it, so a stat of /usr does not copy /usr."""
    api = container.client.api
    res = api._get(api._url("/containers/{0}/archive", container.id), params={"path": path}, stream=True)
    if res.status_code == 404:
        res.close()
        return None, None
    api._raise_for_status(res)
    header = res.headers.get("x-docker-container-path-stat")
    stat = json.loads(base64.b64decode(header)) if header else None
    return res, stat


def _first_member(res: Any) -> tuple[Optional[tarfile.TarInfo], bytes]:
    try:
        res.raw.decode_content = True
        with tarfile.open(fileobj=res.raw, mode="r|") as tar:
            for member in tar:
                data = b""
                if member.isfile() and member.size <= 1 << 20:
                    f = tar.extractfile(member)
                    data = f.read() if f is not None else b""
                return member, data
    except (tarfile.TarError, OSError):
        pass
    finally:
        res.close()
    return None, b""


def _read(container: Any, path: str) -> str:
    res, _ = _archive(container, path)
    if res is None:
        return ""
    _, data = _first_member(res)
    return data.decode("utf-8", "replace")


def _stat(container: Any, path: str, depth: int = 0) -> Optional[PathInfo]:
    res, _ = _archive(container, path)
    if res is None:
        return None
    member, _ = _first_member(res)
    if member is None:
        return None
    if member.issym() and depth < 8:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
        info = _stat(container, target, depth + 1)
        return PathInfo(path, info.uid, info.gid, info.mode, info.is_dir) if info else None
    return PathInfo(path, member.uid, member.gid, member.mode & 0o7777, member.isdir())


def _passwd(text: str) -> list[PasswdEntry]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit() and parts[3].isdigit():
            out.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5]))
    return out


def _groups(text: str) -> list[tuple[str, int, tuple[str, ...]]]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            out.append((parts[0], int(parts[2]), tuple(m for m in parts[3].split(",") if m)))
    return out


def resolve_user(spec: str, facts: Optional[ImageFacts]
                 ) -> tuple[Optional[int], Optional[int], tuple[int, ...], str, str]:
    """Docker's reading of `user:` / USER: (uid, gid, supplementary gids, passwd home, why unknown).

    A name is looked up in the image's own /etc/passwd and /etc/group, as runc does; a
    numeric uid with no entry gets gid 0 and HOME=/. None where the image would be needed
    and is not there.
    """
    spec = spec.strip() or "0"
    name, _, group = spec.partition(":")
    passwd = facts.passwd if facts is not None and facts.present else None
    entry: Optional[PasswdEntry] = None
    if name.isdigit():
        uid: Optional[int] = int(name)
        if passwd is not None:
            entry = next((e for e in passwd if e.uid == uid), None)
    elif passwd is None:
        why = facts.why if facts is not None else "the image was not read"
        return None, None, (), "", f"user {name!r} is a name and {why}"
    else:
        entry = next((e for e in passwd if e.name == name), None)
        if entry is None:
            return None, None, (), "", f"user {name!r} is not in the image's /etc/passwd (it would not start)"
        uid = entry.uid
    gid: Optional[int] = entry.gid if entry is not None else (0 if passwd is not None or name.isdigit() else None)
    if group:
        if group.isdigit():
            gid = int(group)
        elif facts is None or not facts.present:
            gid = None
        else:
            match = next((g for g in facts.groups if g[0] == group), None)
            if match is None:
                return None, None, (), "", f"group {group!r} is not in the image's /etc/group"
            gid = match[1]
    extra: tuple[int, ...] = ()
    if entry is not None and facts is not None and not group:
        extra = tuple(g[1] for g in facts.groups if entry.name in g[2] and g[1] != gid)
    home = entry.home if entry is not None else ""  # no entry: Docker's HOME=/
    return uid, gid, extra, home, ""
