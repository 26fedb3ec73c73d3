"""`volinit check`: find the incidents in a project before a service dies of them.

Gather workloads (compose today; each source is one adapter), run the static rules, then,
unless --static, prove them with a probe in a throwaway copy of each service's container.
Exit 0 clean, 1 on any finding, 2 on usage or compose errors.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from volinit.errors import EXIT_FAILED, EXIT_OK, UsageError, one_line
from volinit.host.rules import DEFAULT_MIN_TEMP, static_findings
from volinit.host.workload import Finding, Workload


@dataclass(frozen=True)
class Options:
    files: list[str] = field(default_factory=list)
    project_directory: Optional[str] = None
    profiles: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    static: bool = False
    min_temp: Optional[str] = None
    persist: list[str] = field(default_factory=list)
    as_json: bool = False
    volinit_image: Optional[str] = None
    manifests: list[str] = field(default_factory=list)  # -k: Kubernetes manifests, checked statically


def parse_persist(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        service, sep, path = item.partition(":")
        if not sep or not service or not path.startswith("/"):
            raise UsageError("--persist", repr(item), "not SERVICE:PATH with an absolute PATH",
                             "e.g. --persist api:/app/media")
        out.setdefault(service, []).append(posixpath.normpath(path))
    return out


def gather(opts: Options, client: Any, engine_why: str) -> tuple[list[Workload], str]:
    """The workloads to check and a label for where they came from. One branch per source:
    compose files, or Kubernetes manifests (-k, or -f files that are manifests)."""
    from volinit.host import kube
    from volinit.host.compose import load_project

    if kube_sources(opts):
        return kube.load_workloads(kube_sources(opts), list(opts.services), client), "manifests"

    project = load_project(list(opts.files), opts.project_directory, list(opts.profiles), list(opts.services),
                           client=client, engine_why=engine_why)
    return list(project.workloads), project.name


def kube_sources(opts: Options) -> list[str]:
    """-k paths, or -f files that are all Kubernetes manifests (every document has apiVersion
    and kind, which a compose file never has)."""
    from volinit.host.kube import looks_like_manifest

    if opts.manifests:
        if opts.files or opts.profiles or opts.project_directory:
            raise UsageError("-k", "", "cannot be combined with compose's -f, --profile or --project-directory",
                             "check the compose project and the manifests in two runs")
        return list(opts.manifests)
    if opts.files and all(looks_like_manifest(f) for f in opts.files):
        return list(opts.files)
    return []


def run(opts: Options) -> int:
    from volinit.doctor import parse_size
    from volinit.host.engine import connect

    min_temp = parse_size(opts.min_temp, "--min-temp") if opts.min_temp is not None else DEFAULT_MIN_TEMP
    persist = parse_persist(list(opts.persist))
    kube = bool(kube_sources(opts))  # no probe: nothing here runs a pod as the kubelet would
    if opts.static or kube:
        client, engine_why = connect(required=False)
    else:
        client, engine_why = connect(required=True, why="the dynamic check needs a Docker engine")
    workloads, _label = gather(opts, client, engine_why)
    names = {w.name for w in workloads}
    for service in persist:
        if service not in names:
            raise UsageError("--persist", service, "is not a service of this project",
                             f"services: {', '.join(sorted(names)) or 'none'}")
    workloads = [replace(w, persist=tuple(dict.fromkeys((*w.persist, *persist.get(w.name, ())))))
                 for w in workloads]

    findings = static_findings(workloads, min_temp=min_temp, min_temp_for_all=opts.min_temp is not None)
    if kube:
        from volinit.host.kube import in_kubernetes_words

        findings = [in_kubernetes_words(f) for f in findings]
    notes: dict[str, list[str]] = {w.name: list(w.notes) for w in workloads}
    probed: dict[str, bool] = {w.name: False for w in workloads}
    if not opts.static and not kube:
        findings = _prove(workloads, findings, client, min_temp, opts, notes, probed)
    _report(workloads, findings, notes, probed, opts.as_json)
    return EXIT_FAILED if findings else EXIT_OK


def _prove(workloads: list[Workload], findings: list[Finding], client: Any, min_temp: int, opts: Options,
           notes: dict[str, list[str]], probed: dict[str, bool]) -> list[Finding]:
    from volinit.host.probe import dynamic_findings, merge, probe_binary, run_probes

    tmp, binary = probe_binary(client, opts.volinit_image)
    try:
        results = run_probes(workloads, client, binary)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    dynamic: list[Finding] = []
    cleared: set[tuple[str, str, str]] = set()
    for w in workloads:
        res = results.get(w.name)
        if res is None:
            if not w.init:
                notes[w.name].append("not probed: its image is not present")
            continue
        notes[w.name] += res.not_created
        if res.error:
            notes[w.name].append(f"not probed: {res.error}")
            continue
        probed[w.name] = True
        found, ok = dynamic_findings(w, res, min_temp=min_temp, every=opts.min_temp is not None)
        dynamic += found
        cleared |= {(rule, w.name, path) for rule, path in ok}
    return merge(findings, dynamic, cleared)


def _user(w: Workload) -> Optional[str]:
    if not w.user.known:
        return None
    return f"{w.user.uid}:{w.user.gid}" if w.user.gid is not None else str(w.user.uid)


def _report(workloads: list[Workload], findings: list[Finding], notes: dict[str, list[str]],
            probed: dict[str, bool], as_json: bool) -> None:
    if as_json:
        doc = {
            "ok": not findings,
            "services": [{"name": w.name, "image": w.image, "user": _user(w), "read_only": w.read_only_root,
                          "gated_by": w.gate or None, "init": w.init, "probed": probed.get(w.name, False),
                          "notes": notes.get(w.name, [])} for w in workloads],
            "findings": [f.as_dict() for f in findings],
        }
        print(json.dumps(doc, indent=2))
    else:
        for w in workloads:
            for note in notes.get(w.name, []):
                print(one_line(f"volinit: note: {w.name}: {note}"), file=sys.stderr)
        if sys.stdout.isatty():
            if findings:
                _table(findings)
        else:
            for f in findings:
                print(one_line(f"{f.id} {f.service} {f.path} [{f.source}]: {f.message} (fix: {f.fix})"))
    checked = sum(1 for w in workloads if not w.init)
    of = f"{checked} service{'s' if checked != 1 else ''}"
    mode = "dynamic" if any(probed.values()) else "static"
    if findings:
        print(f"volinit: {len(findings)} finding{'s' if len(findings) != 1 else ''} in "
              f"{len({f.service for f in findings})} of {of} ({mode} check)", file=sys.stderr)
    else:
        print(f"volinit: no findings in {of} ({mode} check)", file=sys.stderr)


def _table(findings: list[Finding]) -> None:
    raw = [("RULE", "SERVICE", "PATH", "MESSAGE", "FIX")] + [
        (f.id, f.service, f.path, f"{f.message}{'' if f.source == 'static' else ' [probed]'}", f.fix)
        for f in findings]
    rows = [[one_line(c) for c in r] for r in raw]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:3])) + f"  {r[3]}  -> {r[4]}")
