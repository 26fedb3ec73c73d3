"""The volume spec: YAML (or ad-hoc flags) to frozen dataclasses, validated whole.

Nothing is touched on disk until the whole spec has loaded, so every rule lives here and
every failure names its key path, e.g. ``volumes./app/cache.dirs..tmp.prune``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from volinit.errors import SpecError, UsageError, flag_errors

CHOWN_POLICIES = ("on-root-mismatch", "always", "never")
HARDLINK_POLICIES = ("skip", "chown")
DEFAULT_SPEC_PATH = "/etc/volinit/volinit.yaml"

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"([0-9]{1,20})([smhdw])")  # bounded: int() refuses 4300+ digits
_MAX_DURATION = 100 * 365 * 86400
MAX_SPEC_BYTES = 1024 * 1024
NAME_MAX = 255  # bytes in one path component, on every Linux filesystem volumes live on
MAX_DEPTH = 32  # a spec nests 4 deep (volumes, a volume, dirs, a dir)
_OWNER = re.compile(r"([0-9]{1,20})(?::([0-9]{1,20}))?")  # ASCII digits, bounded: int() refuses 4300+
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2)

# Where a chown -R would wreck the container (or the host, through a bind mount).
_SYSTEM_TOP = {"bin", "boot", "dev", "etc", "home", "opt", "proc", "root", "run", "sbin",
               "srv", "sys", "tmp", "usr", "var"}
_SYSTEM_TREES = {"proc", "sys", "dev", "etc", "usr", "boot", "bin", "sbin"}


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class DirSpec:
    """A directory volinit creates inside a volume, and optionally prunes."""

    path: str  # relative to the volume, normalised, no "." or ".." parts
    mode: int | None = None
    prune: int | None = None  # seconds
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeSpec:
    path: str  # absolute, normalised
    owner: Owner
    mode: int | None = None  # the volume root only
    chown: str = "on-root-mismatch"
    hardlinks: str = "skip"
    dirs: tuple[DirSpec, ...] = ()


@dataclass(frozen=True)
class Spec:
    volumes: tuple[VolumeSpec, ...] = field(default_factory=tuple)


class _YamlInt(int):
    """An int read from a spec that keeps the text it was written as.

    YAML 1.1 reads an unquoted 33:33 as base 60 (2013) and 01000 as octal (512): an owner
    or a duration is judged by what the user wrote, not by what YAML made of it.
    """

    text: str


def _written(value: Any) -> str:
    return value.text if isinstance(value, _YamlInt) else str(value)


def parse_duration(value: Any, key: str) -> int:
    """Seconds in a duration such as ``90m``, ``24h`` or ``1d12h``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SpecError(key, f"expected a duration, got {_show(value)}", 'write it like "24h" or "1d12h"')
    text = _written(value).strip()
    pos, total = 0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise SpecError(key, f"bad duration {text!r}",
                        "use <number><unit> with units s, m, h, d, w, e.g. 90m, 24h, 1d12h")
    if total == 0:
        raise SpecError(key, f"duration {text!r} is zero", "a prune age must be positive")
    if total > _MAX_DURATION:  # also keeps `now - age` within a float
        raise SpecError(key, f"duration {_show(text)} is longer than 100 years", "use a shorter age, e.g. 30d")
    return total


def parse_mode(value: Any, key: str) -> int:
    """Permission bits from a quoted octal string such as ``"0750"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise SpecError(key, f"mode {_written(value)} is a number, not an octal string",
                        'quote it: YAML reads 0750 as 488 and 750 as seven hundred fifty; write "0750"')
    if not isinstance(value, str) or not re.fullmatch(r"[0-7]{3,4}", value.strip()):
        raise SpecError(key, f"bad mode {_show(value)}", 'use a quoted octal string such as "0750" or "1777"')
    return int(value.strip(), 8)


def parse_owner(value: Any, key: str) -> Owner:
    """``"UID[:GID]"`` with numeric ids; GID defaults to UID."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = _written(value)
    match = _OWNER.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise SpecError(key, f"bad owner {_show(value)}",
                        'use numeric "UID" or "UID:GID", e.g. "1000:1000"; '
                        "names need /etc/passwd, which the volume's users may not share")
    uid = int(match.group(1))
    gid = int(match.group(2)) if match.group(2) is not None else uid
    if uid > _MAX_ID or gid > _MAX_ID:
        raise SpecError(key, f"owner {value!r} is out of range", f"ids go from 0 to {_MAX_ID}")
    return Owner(uid, gid)


def parse_volume_path(value: Any, key: str) -> str:
    """An absolute volume path, normalised, that is not a system directory."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise SpecError(key, f"volume path {_show(value)} is not absolute",
                        "name the mount point inside the container, e.g. /app/cache")
    if "\0" in value:
        raise SpecError(key, "volume path contains a NUL byte")
    parts = [p for p in value.split("/") if p and p != "."]
    if ".." in parts:
        raise SpecError(key, f"volume path {value!r} contains '..'", "write the path without '..'")
    path = "/" + "/".join(parts)
    if _is_system_path(parts):
        raise SpecError(key, f"refusing system path {path}",
                        "volinit changes owners recursively; point it at a mounted volume such as /app/cache or /data")
    return path


def parse_rel_dir(value: Any, key: str) -> str:
    """A path relative to its volume that stays inside it."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError(key, f"bad directory name {_show(value)}", "use a relative path such as .tmp or cache/models")
    if value.startswith("/"):
        raise SpecError(key, f"directory {value!r} is absolute",
                        "dirs are relative to their volume; drop the leading /")
    if "\0" in value:
        raise SpecError(key, "directory name contains a NUL byte")
    parts = [p for p in value.split("/") if p and p != "."]
    if ".." in parts:
        raise SpecError(key, f"directory {value!r} leaves its volume", "dirs may not contain '..'")
    if not parts:
        raise SpecError(key, f"directory {value!r} is the volume itself", "name a directory inside the volume")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise SpecError(key, f"directory name {_show(part)} is longer than {NAME_MAX} bytes",
                            "filesystems refuse longer names; shorten it")
    return "/".join(parts)


def parse_keep(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(g, str) and g for g in value):
        raise SpecError(key, f"expected a list of glob patterns, got {_show(value)}", 'e.g. keep: ["*.lock"]')
    for glob in value:
        if "/" in glob:
            raise SpecError(key, f"keep pattern {glob!r} contains '/'", "patterns match entry names, not paths")
        fnmatch.translate(glob)
    return tuple(value)


def _choice(value: Any, key: str, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise SpecError(key, f"unknown value {_show(value)}", "use one of " + ", ".join(choices))
    return str(value)


def _is_system_path(parts: list[str]) -> bool:
    if not parts:
        return True
    top = parts[0]
    lib = fnmatch.fnmatchcase(top, "lib*")
    if len(parts) == 1:
        return top in _SYSTEM_TOP or lib
    if top in _SYSTEM_TREES or lib:
        return True
    return parts[:3] == ["var", "lib", "docker"]


def _show(value: Any) -> str:
    # reprlib, not repr: YAML aliases make a short spec whose full repr is gigabytes
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 60, 60
    text = short.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: Any, key: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SpecError(key, f"expected a mapping, got {_show(value)}")
    allowed = tuple(allowed)
    for name in value:
        if name not in allowed:
            raise SpecError(f"{key}.{name}" if key else str(name), "unknown key",
                            "allowed here: " + ", ".join(allowed))
    return value


def _dir_spec(rel: Any, raw: Any, key: str) -> DirSpec:
    path = parse_rel_dir(rel, key)
    body = _mapping(raw, key, ("mode", "prune", "keep"))
    return DirSpec(
        path=path,
        mode=parse_mode(body["mode"], f"{key}.mode") if "mode" in body else None,
        prune=parse_duration(body["prune"], f"{key}.prune") if "prune" in body else None,
        keep=parse_keep(body["keep"], f"{key}.keep") if "keep" in body else (),
    )


def _volume_spec(path: Any, raw: Any, default_owner: Owner | None, key: str) -> VolumeSpec:
    norm = parse_volume_path(path, key)
    body = _mapping(raw, key, ("owner", "mode", "chown", "hardlinks", "dirs"))
    if "owner" in body:
        owner = parse_owner(body["owner"], f"{key}.owner")
    elif default_owner is not None:
        owner = default_owner
    else:
        raise SpecError(f"{key}.owner", "no owner for this volume",
                        'set a top-level owner: "1000:1000" or one per volume')
    dirs_raw = body.get("dirs")
    if dirs_raw is None:  # `dirs:` with nothing after it
        dirs_raw = {}
    if not isinstance(dirs_raw, dict):  # not `or {}`: an empty list or "" is a mistake, not "no dirs"
        raise SpecError(f"{key}.dirs", f"expected a mapping of relative paths, got {_show(dirs_raw)}",
                        "e.g. dirs: {.tmp: {mode: \"0700\"}}")
    dirs = tuple(_dir_spec(rel, d, f"{key}.dirs.{rel}") for rel, d in dirs_raw.items())
    seen: set[str] = set()
    for d, rel in zip(dirs, dirs_raw, strict=True):
        if d.path in seen:
            raise SpecError(f"{key}.dirs.{rel}", f"directory {d.path!r} is listed twice")
        seen.add(d.path)
    return VolumeSpec(
        path=norm,
        owner=owner,
        mode=parse_mode(body["mode"], f"{key}.mode") if "mode" in body else None,
        chown=_choice(body.get("chown", "on-root-mismatch"), f"{key}.chown", CHOWN_POLICIES),
        hardlinks=_choice(body.get("hardlinks", "skip"), f"{key}.hardlinks", HARDLINK_POLICIES),
        dirs=dirs,
    )


def _check_overlaps(volumes: tuple[VolumeSpec, ...], keys: list[str]) -> None:
    seen: dict[str, str] = {}
    for vol, key in zip(volumes, keys, strict=True):
        if vol.path in seen:
            raise SpecError(key, f"volume {vol.path} is listed twice (also as {seen[vol.path]})")
        seen[vol.path] = key


def from_data(data: Any) -> Spec:
    """Validate a parsed YAML document into a Spec."""
    top = _mapping(data, "", ("version", "owner", "volumes"))
    if "version" not in top:
        raise SpecError("version", "missing", "start the spec with: version: 1")
    if top["version"] != 1 or isinstance(top["version"], bool):
        raise SpecError("version", f"unsupported version {_show(top['version'])}", "this volinit reads version: 1")
    owner = parse_owner(top["owner"], "owner") if "owner" in top else None
    vols_raw = top.get("volumes")
    if not isinstance(vols_raw, dict) or not vols_raw:
        raise SpecError("volumes", "no volumes", "list at least one mounted volume path under volumes:")
    keys = [f"volumes.{p}" for p in vols_raw]
    volumes = tuple(_volume_spec(p, v, owner, k) for (p, v), k in zip(vols_raw.items(), keys, strict=True))
    _check_overlaps(volumes, keys)
    return Spec(volumes)


def _loader(yaml: Any) -> Any:
    """The safe loader (C when built), with ints that keep their text (_YamlInt)."""
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def construct_int(loader: Any, node: Any) -> _YamlInt:
        value = _YamlInt(loader.construct_yaml_int(node))
        value.text = node.value
        return value

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        # YAML lets a later key silently replace an earlier one: in a spec that drops a
        # volume's settings or changes the owner unseen. Merged keys (<<) may be overridden.
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = loader.construct_object(key_node, deep=deep)
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {_show(key)}", key_node.start_mark)
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor says so
                    break
        return base.construct_mapping(loader, node, deep)

    loader: Any = type("SpecLoader", (base,), {"construct_mapping": construct_mapping})
    loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return loader


def _check_depth(yaml: Any, text: str, source: str) -> None:
    """Refuse deep nesting before loading: the C loader builds nodes recursively, and a
    100 KB spec of brackets overflows its stack (a segfault, not an error)."""
    depth = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise SpecError(f"{source} line {mark.line + 1} column {mark.column + 1}",
                                f"nested deeper than {MAX_DEPTH} levels", "a spec needs four; fix the structure")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def loads(text: str, source: str = "spec") -> Spec:
    """Parse and validate YAML text; errors name the key path or the line and column."""
    import yaml  # deferred: a container start that needs no spec pays nothing for it

    try:
        _check_depth(yaml, text, source)
        data = yaml.load(text, Loader=_loader(yaml))  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source} line {mark.line + 1} column {mark.column + 1}" if mark else source
        raise SpecError(where, f"bad YAML: {exc.problem or exc.context}", "fix the YAML syntax there") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, f"bad YAML: {exc}", "fix the YAML syntax") from None
    except (ValueError, RecursionError) as exc:
        raise SpecError(source, f"unreadable YAML: {exc}", "fix the YAML syntax") from None
    return from_data(data)


def load(path: str) -> Spec:
    from volinit.errors import OperationError

    if not path:
        raise UsageError("-f", "", "empty path", "name the spec file, e.g. -f volinit.yaml")
    try:
        # O_NONBLOCK: a FIFO must not hang the init container at open; it is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpecError(path, "spec file not found",
                        "mount it (compose configs: with file:), pass -f SPEC, or set VOLINIT_SPEC") from None
    except OSError as exc:
        raise OperationError("cannot read spec", path, exc.strerror or str(exc)) from None
    try:
        with open(fd, "rb", closefd=True) as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SpecError(path, "not a regular file", "point -f or VOLINIT_SPEC at the spec file itself")
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise OperationError("cannot read spec", path, exc.strerror or str(exc)) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(path, f"larger than {MAX_SPEC_BYTES // 1024} KiB",
                        "is this the spec file? a spec is a few lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, f"not UTF-8 text (byte {exc.start})", "save the spec as UTF-8") from None
    return loads(text, source=path)


def from_flags(paths: list[str], owner: str | None, mode: str | None, chown: str,
               dirs: list[str], prune: str | None) -> Spec:
    """The ad-hoc form, ``volinit apply PATH... --owner U[:G] ...``, as the same Spec."""
    with flag_errors():
        if owner is None:
            raise SpecError("--owner", "required with PATH arguments", "e.g. --owner 1000:1000")
        own = parse_owner(owner, "--owner")
        vmode = parse_mode(mode, "--mode") if mode is not None else None
        policy = _choice(chown, "--chown", CHOWN_POLICIES)
        age = parse_duration(prune, "--prune") if prune is not None else None
        if age is not None and not dirs:
            raise SpecError("--prune", "given without --dir", "--prune applies to each --dir; add --dir .tmp")
        rels: list[str] = []
        for rel in dirs:
            norm = parse_rel_dir(rel, f"--dir {rel}")
            if norm not in rels:
                rels.append(norm)
        dir_specs = tuple(DirSpec(path=r, prune=age) for r in rels)
        volumes = tuple(
            VolumeSpec(path=parse_volume_path(p, f"PATH {p}"), owner=own, mode=vmode,
                       chown=policy, dirs=dir_specs)
            for p in paths
        )
        _check_overlaps(volumes, [f"PATH {p}" for p in paths])
        return Spec(volumes)


def json_schema() -> str:
    """The spec's JSON Schema (draft 2020-12), as shipped in the package, for `volinit schema`.

    The loader above stays the judge: the schema cannot hold every rule (see its description).
    """
    from importlib import resources  # deferred: only `volinit schema` and `fix` read it

    return resources.files("volinit").joinpath("spec.schema.json").read_text(encoding="utf-8")


def parse_prune_dir(value: str, key: str) -> str:
    """A directory to prune: any absolute path but / and the system trees (/tmp is fine)."""
    if not value or "\0" in value:
        raise SpecError(key, f"bad directory {value!r}")
    try:
        path = os.path.normpath(os.path.join(os.getcwd(), value))
    except FileNotFoundError:  # only a relative value reaches getcwd's answer
        raise SpecError(key, f"{value!r} is relative and the working directory was removed",
                        "give the absolute path") from None
    parts = [p for p in path.split("/") if p]
    if parts == ["tmp"]:  # the classic target of tmpreaper-style cleaning
        return path
    if _is_system_path(parts):
        raise SpecError(key, f"refusing to prune system path {path}",
                        "name the temp or cache dir itself, e.g. /app/cache/.tmp")
    return path
