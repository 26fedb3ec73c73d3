"""`volinit fix`: write the compose override and the spec that make `check` clean.

Reads the project as `check` does (through `docker compose config`), asks the static rules
what would fail, plans the change (`plan.py`) and renders it for compose: one hardened
init service that owns the volumes, `depends_on` on their writers, TMPDIR and cache
variables, the new volumes. It never writes the user's own files: only the override and
the spec, each atomically, and only over files it wrote itself.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from volinit.errors import EXIT_FAILED, EXIT_OK, OperationError, UsageError
from volinit.host.plan import FixPlan, VolumePlan, WorkloadPlan
from volinit.host.workload import VOLUME, User, Workload
from volinit.spec import Owner

DEFAULT_OVERRIDE = "compose.volinit.yaml"
DEFAULT_SPEC = "volinit.yaml"
# The published image (README, Quick start); VOLINIT_IMAGE overrides it at `up` time, so the
# same override runs offline with a locally built tag.
PUBLISHED_IMAGE = "ghcr.io/volinit/volinit:0.1"
IMAGE = "${VOLINIT_IMAGE:-" + PUBLISHED_IMAGE + "}"
SPEC_TARGET = "/etc/volinit/volinit.yaml"
INIT_MOUNT_ROOT = "/volumes"  # each volume at /volumes/<name>: two services may mount one at two paths
MARK = "Written by `volinit fix`"  # a file with this line is ours to overwrite
DEFAULT_MIN_TEMP = 1 << 30  # check's default --min-temp: big downloads stage through tempfile
_SEPARATOR = ":"  # COMPOSE_FILE's separator on Linux and macOS (COMPOSE_PATH_SEPARATOR changes it)


@dataclass(frozen=True)
class Output:
    """What fix writes: two files and their text."""

    override_path: str
    override: str
    spec_path: str
    spec: str


def parse_owners(values: Iterable[str]) -> dict[str, Owner]:
    """--owner SERVICE=UID[:GID], repeatable."""
    from volinit.errors import SpecError
    from volinit.spec import parse_owner

    owners: dict[str, Owner] = {}
    for value in values:
        service, sep, ids = value.partition("=")
        if not sep or not service.strip():
            raise UsageError("--owner", repr(value), "expected SERVICE=UID[:GID]", "e.g. --owner web=1000:1000")
        try:
            owner = parse_owner(ids, "--owner")
        except SpecError as exc:
            raise UsageError("--owner", repr(value), exc.why, exc.fix) from None
        if service in owners and owners[service] != owner:
            raise UsageError("--owner", service, f"given twice ({owners[service]} and {owner})", "give it once")
        owners[service] = owner
    return owners


def run(files: Sequence[str], override: Optional[str], spec_file: Optional[str], owner_flags: Sequence[str],
        dry_run: bool, say: Callable[[str], None], error: Callable[[str], None]) -> int:
    from volinit.host import compose, plan, rules
    from volinit.host.engine import connect

    owners = parse_owners(owner_flags)
    client, engine_why = connect(required=False)  # without one, --owner stands in for the images' users
    project = compose.load_project(list(files), None, [], [], client=client, engine_why=engine_why)
    names = [w.name for w in project.workloads]
    for service in sorted(owners):
        if service not in names:
            raise UsageError("--owner", service, "no such service in the project",
                             "services: " + ", ".join(sorted(names)))
    keys = _keys_by_name(project.config)
    workloads = [_for_fix(w, owners.get(w.name), keys) for w in project.workloads]
    inputs = [os.path.abspath(f) for f in (project.files or files)]
    if not inputs:
        raise UsageError("-f", "", "no compose file", "pass -f compose.yaml")
    override_path, spec_path = _paths(inputs, override, spec_file)
    min_temp = getattr(rules, "DEFAULT_MIN_TEMP", DEFAULT_MIN_TEMP)
    findings = rules.static_findings(workloads, min_temp=min_temp)
    fix_plan = plan.plan(workloads, findings, owners)
    if fix_plan.refusals:
        for r in fix_plan.refusals:
            error(f"cannot fix service {r.service} at {r.path}: {r.why} ({r.fix})")
        say("nothing was written")
        return EXIT_FAILED
    if fix_plan.empty:
        say("nothing to fix: the static checks find nothing in " + ", ".join(_show(p) for p in inputs))
        return EXIT_OK
    for flag, path in (("-o", override_path), ("--spec-file", spec_path)):
        _check_ours(flag, path)
    out = render(fix_plan, project.config, inputs, override_path, spec_path)
    for w in fix_plan.workloads:
        for line in w.why:
            say(f"{w.name}: {line}")
    if dry_run:
        sys.stdout.write(f"# --- {_show(out.override_path)} ---\n{out.override}")
        sys.stdout.write(f"# --- {_show(out.spec_path)} ---\n{out.spec}")
        say("dry run: nothing written")
        return EXIT_OK
    changed = write_both(out)
    verb = "wrote" if changed else "unchanged:"
    say(f"{verb} {_show(out.override_path)} and {_show(out.spec_path)}")
    print(usage_line(inputs, out.override_path))
    print(usage_line(inputs, out.override_path, env=True))
    return EXIT_OK


def _keys_by_name(config: Mapping[str, Any]) -> dict[str, str]:
    """Each declared volume's compose key by its full name (project_key): the reader names
    volumes as Docker does, the override as the compose file does."""
    declared = config.get("volumes") or {}
    return {str((v or {}).get("name") or k): str(k) for k, v in declared.items() if isinstance(v, (dict, type(None)))}


def _for_fix(w: Workload, owner: Optional[Owner], keys: Mapping[str, str]) -> Workload:
    """The workload as fix judges it: the --owner given for it, volumes by their compose
    keys, and every volume possibly old. Whether a volume exists yet changes between two
    runs (after `up`), and the plan must not: an init that finds a volume right costs a stat."""
    from dataclasses import replace

    mounts = tuple(replace(m, exists=None, source=keys.get(m.source, m.source)) if m.kind == VOLUME else m
                   for m in w.mounts)
    user = User(owner.uid, owner.gid, "--owner") if owner is not None else w.user
    gated = tuple(keys.get(v, v) for v in w.gated_volumes)
    return replace(w, mounts=mounts, user=user, gated_volumes=gated)


def _show(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("../..") else path


def usage_line(inputs: Sequence[str], override_path: str, env: bool = False) -> str:
    import shlex

    files = [_show(p) for p in [*inputs, override_path]]
    if env:
        return f"COMPOSE_FILE={shlex.quote(_SEPARATOR.join(files))} docker compose up -d --wait"
    return "docker compose " + " ".join(f"-f {shlex.quote(f)}" for f in files) + " up -d --wait"


def _paths(inputs: Sequence[str], override: Optional[str], spec_file: Optional[str]) -> tuple[str, str]:
    base = os.path.dirname(inputs[0])
    override_path = os.path.abspath(override) if override else os.path.join(base, DEFAULT_OVERRIDE)
    spec_path = (os.path.abspath(spec_file) if spec_file
                 else os.path.join(os.path.dirname(override_path), DEFAULT_SPEC))
    real_inputs = {os.path.realpath(p) for p in inputs}
    for flag, path in (("-o", override_path), ("--spec-file", spec_path)):
        if os.path.realpath(path) in real_inputs:
            raise UsageError(flag, _show(path), "is one of the compose files read",
                             "volinit fix never writes your own files; name a new file")
    if os.path.realpath(override_path) == os.path.realpath(spec_path):
        raise UsageError("--spec-file", _show(spec_path), "is the override file too", "name two different files")
    return override_path, spec_path


def _check_ours(flag: str, path: str) -> None:
    """An existing file is overwritten only when fix wrote it: a hand-written spec beside the
    compose file (as in compose-examples/) is the user's."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise UsageError(flag, _show(path), "is a directory", "name a file") from None
    except OSError as exc:
        raise OperationError("cannot read", _show(path), exc.strerror or str(exc)) from None
    if MARK not in head:
        raise UsageError(flag, _show(path), "exists and was not written by volinit fix",
                         f"move it away, or pass {flag} NEW-FILE to write elsewhere")


# -- rendering ---------------------------------------------------------------------------------

def _escape(value: str) -> str:
    """compose interpolates $VAR in every file it reads: a literal $ is written $$."""
    return value.replace("$", "$$")


def _free(base: str, taken: Iterable[str]) -> str:
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def _volume_keys(plan: FixPlan, config: Mapping[str, Any]) -> dict[str, str]:
    """The compose key of each planned volume: readers may name a volume by its key or by
    its full name (project_key)."""
    declared = config.get("volumes") or {}
    by_name = {(v or {}).get("name"): k for k, v in declared.items() if isinstance(v, dict)}
    keys = {}
    for vol in plan.volumes:
        if vol.source in declared:
            keys[vol.source] = vol.source
        elif vol.source in by_name:
            keys[vol.source] = by_name[vol.source]
        elif vol.role != "existing":
            keys[vol.source] = vol.source
        else:
            raise OperationError("volume", vol.source, "is mounted but not declared in the project",
                                 "declare it under volumes: in the compose file")
    for vol in plan.volumes:
        if vol.role != "existing" and vol.source in declared:
            raise UsageError("volume", vol.source, "the name volinit fix would give a new volume is taken",
                             "rename your volume, or add the volume yourself")
    return keys


def render(plan: FixPlan, config: Mapping[str, Any], inputs: Sequence[str], override_path: str,
           spec_path: str) -> Output:
    import yaml

    services = config.get("services") or {}
    init = _free("volinit", services)
    config_key = _free(f"{init}-spec", config.get("configs") or {})
    keys = _volume_keys(plan, config)
    project_dir = os.path.dirname(inputs[0])  # compose resolves every file's relative paths from here
    spec_ref = os.path.relpath(spec_path, project_dir)
    spec_ref = spec_ref if spec_ref.startswith("..") else "./" + spec_ref

    doc: dict[str, Any] = {"services": {}}
    if plan.needs_init:
        doc["services"][init] = {
            "image": IMAGE,
            "read_only": True,
            "network_mode": "none",
            "cap_drop": ["ALL"],
            "cap_add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"],
            "security_opt": ["no-new-privileges:true"],
            "configs": [{"source": config_key, "target": SPEC_TARGET}],
            "volumes": [{"type": "volume", "source": keys[v.source], "target": _init_path(keys[v.source])}
                        for v in plan.volumes],
        }
    for w in plan.workloads:
        doc["services"][w.name] = _service(w, init, keys)
    if plan.needs_init:
        doc["configs"] = {config_key: {"file": _escape(spec_ref)}}
    new = sorted(keys[v.source] for v in plan.volumes if v.role != "existing")
    new += sorted(m.source for w in plan.workloads for m in w.mounts if m.source not in keys)
    if new:
        doc["volumes"] = {name: {} for name in sorted(set(new))}

    sources = ", ".join(os.path.relpath(p, os.path.dirname(override_path)) for p in inputs)
    head = [f"# {MARK} from {sources}; rerun it rather than editing this file.",
            f"# Use: {usage_line(inputs, override_path)}"]
    for w in plan.workloads:
        head += [f"# {w.name}: {line}" for line in w.why]
    override = "\n".join(_comment(line) for line in head) + "\n" + yaml.safe_dump(
        doc, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True)
    return Output(override_path, override, spec_path, render_spec(plan, keys, os.path.basename(override_path)))


def _comment(line: str) -> str:
    from volinit.errors import one_line

    return one_line(line)


def _init_path(key: str) -> str:
    return f"{INIT_MOUNT_ROOT}/{key}"


def _service(w: WorkloadPlan, init: str, keys: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if w.gated:
        body["depends_on"] = {init: {"condition": "service_completed_successfully"}}
    if w.env:
        body["environment"] = {name: _escape(value) for name, value in w.env}
    if w.mounts:
        # long syntax: a target is the user's path and may hold a ':'
        body["volumes"] = [{"type": "volume", "source": keys.get(m.source, m.source), "target": _escape(m.target)}
                           for m in w.mounts]
    return body


_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./ -]*")


def _scalar(text: str) -> str:
    """text as a YAML scalar the spec loader reads back as that string."""
    import yaml

    if _PLAIN.fullmatch(text) and not text.endswith(" "):
        try:
            if yaml.safe_load(text) == text:
                return text
        except yaml.YAMLError:  # "..." or "---" alone end or start a document
            pass
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def render_spec(plan: FixPlan, keys: Mapping[str, str], override_name: str) -> str:
    from volinit import spec as specmod
    from volinit.spec import json_schema

    url = json.loads(json_schema())["$id"]
    writers = sorted({w for v in plan.volumes for w in v.writers})
    lines = [f"# yaml-language-server: $schema={url}",
             _comment(f"# {MARK} for {override_name}: what its init service does before these start: "
                      f"{', '.join(writers)}."),
             "# Rerun `volinit fix` rather than editing this file.",
             "version: 1",
             "volumes:"]
    for v in plan.volumes:
        lines += _spec_volume(v, keys[v.source])
    text = "\n".join(lines) + "\n"
    specmod.loads(text, source="the spec volinit fix wrote")  # a render bug must not reach the disk
    return text


def _spec_volume(v: VolumePlan, key: str) -> list[str]:
    lines = [f"  {_scalar(_init_path(key))}:",
             f"    # volume {key}, written by {', '.join(v.writers) or 'nobody yet'}",
             f'    owner: "{v.owner}"']
    if v.mode is not None:
        lines.append(f'    mode: "{v.mode:04o}"')
    if v.dirs:
        lines.append("    dirs:")
        for d in v.dirs:
            attrs = []
            if d.mode is not None:
                attrs.append(f'mode: "{d.mode:04o}"')
            if d.prune is not None:
                attrs.append(f"prune: {d.prune}")
            lines.append(f"      {_scalar(d.path)}: {{{', '.join(attrs)}}}")
    return lines


# -- writing -----------------------------------------------------------------------------------

def write_both(out: Output) -> bool:
    """Write the spec, then the override, each through a temp file and a rename; a failure
    on the second puts the first back as it was. False when both already hold these bytes."""
    pairs = [(out.spec_path, out.spec), (out.override_path, out.override)]
    if all(_same(path, text) for path, text in pairs):
        return False
    temps: list[str] = []
    backups: list[tuple[str, Optional[str]]] = []  # (path, backup or None when it did not exist)
    try:
        for path, text in pairs:
            temps.append(_temp_with(path, text))
        for (path, _), temp in zip(pairs, temps, strict=True):
            backup = path + ".volinit-old"
            _unlink(backup)  # left by a run killed here before
            try:
                os.link(path, backup)
            except FileNotFoundError:
                backups.append((path, None))
            else:
                backups.append((path, backup))
            os.replace(temp, path)
    except OSError as exc:
        for done, kept in reversed(backups):
            _restore(done, kept)
        for temp in temps:
            _unlink(temp)
        where = getattr(exc, "filename", None) or out.override_path
        raise OperationError("cannot write", _show(str(where)), exc.strerror or str(exc),
                             "nothing was changed; check the directory's permissions and free space") from None
    for _, kept in backups:
        if kept:
            _unlink(kept)
    return True


def _same(path: str, text: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read() == text.encode("utf-8")
    except OSError:
        return False


def _temp_with(path: str, text: str) -> str:
    import tempfile

    directory = os.path.dirname(path) or "."
    fd, temp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the spec from a rootless engine's user
    except OSError:
        _unlink(temp)
        raise
    return temp


def _restore(path: str, backup: Optional[str]) -> None:
    try:
        if backup is None:
            os.unlink(path)
        else:
            os.replace(backup, path)
    except OSError:
        pass  # best effort: the error raised after this names what failed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # already gone
