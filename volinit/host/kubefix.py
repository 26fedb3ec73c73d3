"""`volinit fix -k`: render the neutral fix plan as patched Kubernetes manifests.

The decisions (which volumes the init owns, for whom, which dirs, TMPDIR and cache vars,
what is refused) are `volinit.host.plan`'s, the same as for compose. This module only
writes them in Kubernetes terms: an initContainer running the volinit image with the spec
from a ConfigMap, env and mounts on the containers, an emptyDir for a new scratch volume
and a PersistentVolumeClaim for new state. One thing compose has no word for is decided
here: state on an emptyDir is moved to a claim (a compose override cannot remove a tmpfs,
a rewritten manifest can).

Everything is a function of the input: the same manifests give the same bytes, and the
output, read back, gives itself (its check is clean, so nothing is left to change).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from volinit.errors import EXIT_FAILED, VolinitError
from volinit.host import kube
from volinit.host.workload import SCRATCH, STATE_NOT_PERSISTENT, TMPFS, Finding

DEFAULT_IMAGE = "ghcr.io/volinit/volinit:0.1"
INIT_NAME = "volinit"
SPEC_VOLUME = "volinit-spec"
SPEC_DIR = "/etc/volinit"
SPEC_KEY = "volinit.yaml"
SPEC_PATH = f"{SPEC_DIR}/{SPEC_KEY}"
INIT_MOUNT_FALLBACK = "/volinit"  # where the init mounts a volume whose own path a spec refuses (/tmp)
MANAGED_BY = {"app.kubernetes.io/managed-by": "volinit"}
# Sized for the walk: one worker per CPU it may use; a walk holds little but fds and stats.
INIT_WORKERS = "2"
INIT_RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "2", "memory": "256Mi"}}
NEW_CLAIM_SIZE = "1Gi"  # a new claim for state the manifest gave no size for
HEADER = ("# Written by `volinit fix -k`: the input's objects, patched, and the ConfigMaps holding the\n"
          "# volinit spec. Apply with `kubectl apply -f`; check with `volinit check -k`. Rerunning fix on\n"
          "# this output changes nothing.\n")


class FixRefused(VolinitError):
    """What fix will not decide for the user (an unknown uid, two uids on one volume): exit 1."""

    exit_code = EXIT_FAILED


@dataclass
class PodChanges:
    """What fix did to one pod template, kept to write the same change as a kustomize patch."""

    init: Optional[dict] = None
    volumes: list[dict] = field(default_factory=list)  # added or replaced pod volumes
    containers: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # name -> env/volumeMounts


@dataclass
class Result:
    text: str  # the multi-document YAML
    objects: list[dict]
    changes: list[tuple[kube.Document, PodChanges]]  # input workload docs (patched copies) that changed
    generated: list[dict]  # ConfigMaps and claims fix added
    lines: list[str]  # what changed and why, for stderr
    notes: list[str]  # how the fix meets fsGroup and other things to review, also in the YAML header


def dns_label(text: str) -> str:
    """A volume or object name Kubernetes accepts: lowercase alphanumerics and '-', at most 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "volinit"


# --- the steps -----------------------------------------------------------------------------

def fix(docs: list[kube.Document], *, owners: Optional[dict[str, Any]] = None, image: str = DEFAULT_IMAGE,
        min_temp: int, image_facts: Optional[Callable[[str], Any]] = None) -> Result:
    """Patch copies of docs so that `check -k` on the result is clean."""
    from volinit.host import plan as planmod
    from volinit.host import rules

    docs = [kube.Document(d.file, d.index, copy.deepcopy(d.obj), d.item) for d in docs]
    names = {(d.kind, _ns(d.obj), d.name) for d in docs}
    changes: dict[int, PodChanges] = {}
    generated: dict[int, list[dict]] = {}
    lines: list[str] = []

    pods = kube.pods(docs, image_facts)
    findings = rules.static_findings([w for p in pods for w in p.workloads], min_temp=min_temp)
    # Kubernetes-only step: state on an emptyDir moves to a claim of its own.
    if _state_to_claims(docs, pods, findings, changes, generated, names, lines):
        pods = kube.pods(docs, image_facts)
        findings = rules.static_findings([w for p in pods for w in p.workloads], min_temp=min_temp)
    workloads = [w for p in pods for w in p.workloads]
    unknown = sorted(set(owners or {}) - {w.name for w in workloads})
    if unknown:
        raise FixRefused("--owner", unknown[0], "names no container in the manifests",
                         "use a name check -k prints: kind/name, or kind/name/container")
    fplan = planmod.plan(workloads, findings, owners or {})
    if fplan.refusals:
        first = fplan.refusals[0]
        more = f" (and {len(fplan.refusals) - 1} more)" if len(fplan.refusals) > 1 else ""
        raise FixRefused("fix", f"{first.service} {first.path}", first.why + more, first.fix)
    specs = {(_ns(d.obj), d.name): str(d.obj["data"].get(SPEC_KEY) or "")
             for d in docs if d.kind == "ConfigMap" and _managed(d.obj) and isinstance(d.obj.get("data"), dict)}
    for p in pods:
        _render_pod(p, fplan, image, docs, changes, generated, names, lines, specs)
    objects: list[dict] = []
    out_changes: list[tuple[kube.Document, PodChanges]] = []
    gen_all: list[dict] = []
    replaced = {(o["kind"], _ns(o), o["metadata"]["name"]) for g in generated.values() for o in g
                if o["kind"] == "ConfigMap"}
    for i, d in enumerate(docs):
        if (d.kind, _ns(d.obj), d.name) in replaced and _managed(d.obj):
            continue  # an earlier fix's ConfigMap: written again, beside its workload
        for o in generated.get(i, []):
            objects.append(o)
            gen_all.append(o)
        objects.append(d.obj)
        if i in changes:
            out_changes.append((d, changes[i]))
    notes = _notes(kube.pods(docs))
    text = HEADER + "".join(_comment(n) for n in notes) + "".join("---\n" + dump(o) for o in objects)
    return Result(text, objects, out_changes, gen_all, lines, notes)


def _items(d: dict, key: str) -> list:
    """d[key] as a list to add to: `key:` written with no value (null) counts as empty."""
    if not isinstance(d.get(key), list):
        d[key] = []
    return d[key]


def _comment(text: str) -> str:
    import textwrap

    return "".join(f"# {line}\n" for line in textwrap.wrap(text, 92))


def _ns(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "")


def _managed(obj: dict) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/managed-by") == "volinit"


def _state_to_claims(docs: list[kube.Document], pods: list[kube.Pod], findings: list[Finding],
                     changes: dict[int, PodChanges], generated: dict[int, list[dict]],
                     names: set[tuple[str, str, str]], lines: list[str]) -> bool:
    """Replace each emptyDir that holds state (state-not-persistent exactly at its mount)
    with a PersistentVolumeClaim: ReadWriteMany when replicas share it, the emptyDir's
    sizeLimit or 1Gi. Returns whether anything changed."""
    changed = False
    by_name = {w.name: (p, w) for p in pods for w in p.workloads}
    for f in findings:
        if f.id != STATE_NOT_PERSISTENT or f.service not in by_name:
            continue
        pod, w = by_name[f.service]
        m = w.mount_for(f.path)
        if m is None or m.kind not in (SCRATCH, TMPFS) or m.target != f.path:
            continue  # on the container's layer: the planner adds a new volume there
        vol = next((v for v in pod.spec.get("volumes") or [] if v.get("name") == m.source), None)
        if vol is None or "emptyDir" not in vol:
            continue
        i = docs.index(pod.doc)
        claim = dns_label(f"{pod.doc.name}-{m.source}")
        size = (vol.get("emptyDir") or {}).get("sizeLimit") or NEW_CLAIM_SIZE
        mode = "ReadWriteMany" if w.replicas > 1 else "ReadWriteOnce"
        key = ("PersistentVolumeClaim", _ns(pod.doc.obj), claim)
        if key not in names:
            meta: dict[str, Any] = {"name": claim}
            if _ns(pod.doc.obj):
                meta["namespace"] = _ns(pod.doc.obj)
            meta["labels"] = dict(MANAGED_BY)
            generated.setdefault(i, []).append({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                "spec": {"accessModes": [mode], "resources": {"requests": {"storage": str(size)}}}})
            names.add(key)
        vol.pop("emptyDir")
        vol["persistentVolumeClaim"] = {"claimName": claim}
        ch = changes.setdefault(i, PodChanges())
        ch.volumes.append({"name": vol["name"], "emptyDir": None, "persistentVolumeClaim": {"claimName": claim}})
        lines.append(f"{f.service}: {f.path} moves from an emptyDir to the new claim {claim} ({mode}, {size}; "
                     "review the size and storage class)")
        changed = True
    return changed


def _writer_mount(p: kube.Pod, source: str) -> Optional[tuple[str, dict]]:
    """(container name, its volumeMount) of the first container that mounts source read-write
    (a subPath mount is the source claim/subPath, as the reader names it)."""
    for cname, c in zip(p.containers, p.spec["containers"], strict=True):
        for vm in c.get("volumeMounts") or []:
            base = _volume_source(p, str(vm.get("name")))
            if base is None or vm.get("readOnly"):
                continue
            if kube.subpath_source(base, vm.get("subPath") or vm.get("subPathExpr") or "") == source:
                return cname, vm
    return None


def _source_of(vol: dict) -> str:
    pvc = vol.get("persistentVolumeClaim")
    if isinstance(pvc, dict) and pvc.get("claimName"):
        return str(pvc["claimName"])
    return str(vol.get("name"))


def _volume_source(p: kube.Pod, vname: str) -> Optional[str]:
    for v in p.spec.get("volumes") or []:
        if v.get("name") == vname:
            return _source_of(v)
    if p.doc.kind == "StatefulSet":
        for t in (p.doc.obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            if (t.get("metadata") or {}).get("name") == vname:
                return vname
    return None


def _volume_name_for(p: kube.Pod, source: str) -> Optional[str]:
    source = source.split("/", 1)[0]  # claim names have no "/": the rest is a subPath
    for v in p.spec.get("volumes") or []:
        if _source_of(v) == source:
            return str(v["name"])
    if p.doc.kind == "StatefulSet":
        for t in (p.doc.obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            if (t.get("metadata") or {}).get("name") == source:
                return source
    return None


def _render_pod(p: kube.Pod, fplan: Any, image: str, docs: list[kube.Document], changes: dict[int, PodChanges],
                generated: dict[int, list[dict]], names: set[tuple[str, str, str]], lines: list[str],
                specs: dict[tuple[str, str], str]) -> None:
    from volinit.host import plan as planmod

    mine = {w.name: (cname, w) for cname, w in zip(p.containers, p.workloads, strict=True)}
    wplans = [wp for wp in fplan.workloads if wp.name in mine]
    vplans = [vp for vp in fplan.volumes if any(n in mine for n in vp.writers)]
    if not wplans and not vplans:
        return
    i = docs.index(p.doc)
    ch = changes.setdefault(i, PodChanges())
    spec = p.spec
    containers = {c["name"]: c for c in spec["containers"]}
    # New volumes first: the plan names them; here they become an emptyDir (scratch) or a claim.
    for vp in vplans:
        if vp.role == planmod.EXISTING:
            continue
        vname = dns_label(vp.source)
        if any(v.get("name") == vname for v in spec.get("volumes") or []):
            continue
        if vp.role == planmod.STATE_NEW:
            claim = dns_label(f"{p.doc.name}-{vp.source.removeprefix(planmod.NEW_VOLUME_PREFIX)}")
            vol: dict[str, Any] = {"name": vname, "persistentVolumeClaim": {"claimName": claim}}
            key = ("PersistentVolumeClaim", _ns(p.doc.obj), claim)
            if key not in names:
                meta: dict[str, Any] = {"name": claim}
                if _ns(p.doc.obj):
                    meta["namespace"] = _ns(p.doc.obj)
                meta["labels"] = dict(MANAGED_BY)
                rw = "ReadWriteMany" if max(mine[n][1].replicas for n in vp.writers if n in mine) > 1 \
                    else "ReadWriteOnce"
                generated.setdefault(i, []).append({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta,
                    "spec": {"accessModes": [rw], "resources": {"requests": {"storage": NEW_CLAIM_SIZE}}}})
                names.add(key)
        else:
            vol = {"name": vname, "emptyDir": {}}
        _items(spec, "volumes").append(vol)
        ch.volumes.append(copy.deepcopy(vol))
    for wp in wplans:
        cname, w = mine[wp.name]
        c = containers[cname]
        for m in wp.mounts:
            vm = {"name": dns_label(m.source), "mountPath": m.target}
            _items(c, "volumeMounts").append(vm)
            ch.containers.setdefault(cname, {}).setdefault("volumeMounts", []).append(dict(vm))
        for name, value in wp.env:
            env = _items(c, "env")
            entry = next((e for e in env if e.get("name") == name), None)
            patch: dict[str, Any] = {"name": name, "value": value}
            if entry is None:
                env.append({"name": name, "value": value})
            else:
                if "valueFrom" in entry:
                    patch["valueFrom"] = None
                entry.pop("valueFrom", None)
                entry["value"] = value
            ch.containers.setdefault(cname, {}).setdefault("env", []).append(patch)
        for why in wp.why:
            lines.append(f"{wp.name}: {why}")
    if vplans:
        _render_init(p, vplans, image, i, ch, generated, names, specs)
    _new_first(p, ch)


def _new_first(p: kube.Pod, ch: PodChanges) -> None:
    """Put what fix added or replaced first, in the order it did, in each name-keyed list:
    where kubectl's strategic merge (and so the kustomize component) puts a patch's items,
    so both outputs are the same objects."""

    def reorder(items: list, added: list, key: str) -> list:
        keys = list(dict.fromkeys(a.get(key) for a in added))
        front = [x for k in keys for x in items if x.get(key) == k]
        return front + [x for x in items if x.get(key) not in keys]

    if ch.volumes and "volumes" in p.spec:
        p.spec["volumes"] = reorder(p.spec["volumes"], ch.volumes, "name")
    for c in p.spec["containers"]:
        parts = ch.containers.get(c.get("name"), {})
        if parts.get("env"):
            c["env"] = reorder(c["env"], parts["env"], "name")
        if parts.get("volumeMounts"):
            c["volumeMounts"] = reorder(c["volumeMounts"], parts["volumeMounts"], "mountPath")


def _render_init(p: kube.Pod, vplans: list, image: str, i: int, ch: PodChanges,
                 generated: dict[int, list[dict]], names: set[tuple[str, str, str]],
                 specs: dict[tuple[str, str], str]) -> None:
    from volinit import spec as specmod

    spec = p.spec
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    cm_name = dns_label(f"{p.doc.name}-volinit")
    existing = _existing_init(spec)
    mounts: list[dict] = [{"name": SPEC_VOLUME, "mountPath": SPEC_DIR, "readOnly": True}]
    volumes: dict[str, dict] = {}
    taken = {SPEC_DIR}
    if existing is not None:  # an earlier fix: keep what it owns, add the new
        for vm in existing.get("volumeMounts") or []:
            if vm.get("name") != SPEC_VOLUME:
                mounts.append(dict(vm))
                taken.add(vm.get("mountPath"))
        volumes.update(_existing_spec(specs.get((_ns(p.doc.obj), cm_name), "")))
    for vp in vplans:
        vname = _volume_name_for(p, vp.source) or dns_label(vp.source)
        found = _writer_mount(p, vp.source)
        path = found[1]["mountPath"] if found else f"{INIT_MOUNT_FALLBACK}/{vname}"
        path = path.rstrip("/") or "/"
        try:
            specmod.parse_volume_path(path, "path")
        except specmod.SpecError:
            path = f"{INIT_MOUNT_FALLBACK}/{vname}"  # /tmp, /home...: refused as a spec path, fine as a mount
        sub = {k: found[1][k] for k in ("subPath", "subPathExpr") if found and found[1].get(k)}
        same = [m for m in mounts if m.get("name") == vname
                and {k: m[k] for k in ("subPath", "subPathExpr") if m.get(k)} == sub]
        if same:
            path = same[0]["mountPath"]
        else:
            if path in taken:
                path = f"{INIT_MOUNT_FALLBACK}/{dns_label(vp.source)}"
            mounts.append({"name": vname, "mountPath": path, **sub})
            taken.add(path)
        gid = fs_group if isinstance(fs_group, int) else vp.owner.gid
        body: dict[str, Any] = {"owner": f"{vp.owner.uid}:{gid}"}
        if vp.mode is not None:
            body["mode"] = f"{vp.mode:04o}"
        dirs: dict[str, Any] = {}
        for d in vp.dirs:
            entry: dict[str, Any] = {}
            if d.mode is not None:
                entry["mode"] = f"{d.mode:04o}"
            if d.prune:
                entry["prune"] = d.prune
            dirs[d.path] = entry
        if dirs:
            body["dirs"] = dirs
        old = volumes.get(path)
        if old is not None and isinstance(old.get("dirs"), dict):
            body.setdefault("dirs", {}).update({k: v for k, v in old["dirs"].items() if k not in body.get("dirs", {})})
            body["dirs"] = dict(sorted(body["dirs"].items()))
        volumes[path] = body
    text = spec_text(p, dict(sorted(volumes.items())))
    specmod.loads(text, f"ConfigMap {cm_name}")  # a spec fix writes must load; a bug otherwise
    cm_meta: dict[str, Any] = {"name": cm_name}
    if _ns(p.doc.obj):
        cm_meta["namespace"] = _ns(p.doc.obj)
    cm_meta["labels"] = dict(MANAGED_BY)
    generated.setdefault(i, []).append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": cm_meta,
                                        "data": {SPEC_KEY: text}})
    names.add(("ConfigMap", _ns(p.doc.obj), cm_name))
    init = {
        "name": INIT_NAME,
        "image": image,
        "command": ["volinit"],
        "args": ["apply", "-f", SPEC_PATH],
        "env": [{"name": "VOLINIT_WORKERS", "value": INIT_WORKERS}],
        "resources": copy.deepcopy(INIT_RESOURCES),
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]},
        },
        "volumeMounts": mounts,
    }
    inits = _items(spec, "initContainers")
    if existing is not None:
        inits[inits.index(existing)] = init
    else:
        inits.insert(0, init)  # first: later initContainers may write the volumes too
    ch.init = copy.deepcopy(init)
    if not any(v.get("name") == SPEC_VOLUME for v in spec.get("volumes") or []):
        vol = {"name": SPEC_VOLUME, "configMap": {"name": cm_name}}
        _items(spec, "volumes").append(vol)
        ch.volumes.append(copy.deepcopy(vol))


def _existing_init(spec: dict) -> Optional[dict]:
    for ic in spec.get("initContainers") or []:
        if isinstance(ic, dict) and ic.get("name") == INIT_NAME and kube.is_volinit_image(str(ic.get("image", ""))):
            return ic
    return None


def _existing_spec(text: str) -> dict[str, dict]:
    """The volumes of the spec an earlier fix wrote, when its ConfigMap is in the input."""
    import yaml

    try:
        data = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return {}
    vols = data.get("volumes") if isinstance(data, dict) else None
    return {str(k): v for k, v in vols.items() if isinstance(v, dict)} if isinstance(vols, dict) else {}


def spec_text(p: kube.Pod, volumes: dict[str, dict]) -> str:
    who = ", ".join(w.name for w in p.workloads)
    head = (f"# The volinit spec for {who}, written by volinit fix -k; the volinit initContainer\n"
            "# applies it before the containers start.\n")
    return head + dump({"version": 1, "volumes": volumes})


def _notes(pods: list[kube.Pod]) -> list[str]:
    """How the fix meets what it leaves alone: fsGroup, and the Pod Security admission level."""
    out: list[str] = []
    for p in pods:
        if _existing_init(p.spec) is None:
            continue
        what = f"{p.doc.kind.lower()}/{p.doc.name}"
        fs_group = (p.spec.get("securityContext") or {}).get("fsGroup")
        policy = (p.spec.get("securityContext") or {}).get("fsGroupChangePolicy") or "unset, so Always"
        if fs_group is not None:
            out.append(
                f"{what} keeps fsGroup {fs_group} (fsGroupChangePolicy: {policy}). At mount time, before any "
                f"initContainer, the kubelet gives the files of each volume type that supports it the group "
                f"{fs_group} and group rw: with Always on every start, walking every file; with OnRootMismatch "
                f"only when the volume root differs. The volinit initContainer then gives the volumes to "
                f"uid:{fs_group}, so the two agree and on the next start neither walks (volinit checks the root; "
                "so does the kubelet with OnRootMismatch). Set fsGroupChangePolicy: OnRootMismatch to keep the "
                "kubelet's part cheap, or remove fsGroup to leave ownership to volinit alone.")
        out.append(f"{what}: the volinit initContainer runs as root with only CHOWN, FOWNER and DAC_OVERRIDE; "
                   "a namespace enforcing the restricted Pod Security Standard refuses it (baseline admits it).")
    return out


_NUMERIC = re.compile(r"^[0-9][0-9:._]*$")


def dump(obj: Any) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: Any, value: str) -> Any:
        # "1000:1000", "0700", "2": quoted, so no YAML reader takes them for numbers
        style = "|" if "\n" in value else ('"' if _NUMERIC.match(value) else None)
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    def _seq(dumper: Any, value: list) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=False)

    _Dumper.add_representer(str, _str)
    _Dumper.add_representer(list, _seq)
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16,
                     allow_unicode=True, indent=2)


# --- the same change as a kustomize component ------------------------------------------------

KUSTOMIZATION = "kustomization.yaml"
RESOURCES_FILE = "volinit-resources.yaml"


def kustomize_files(result: Result) -> dict[str, str]:
    """File name -> text of a kustomize Component that makes the same change to unchanged
    manifests: the ConfigMaps and claims as resources, one strategic-merge patch per
    workload (lists merge by name, as kubectl's patches do; a replaced emptyDir is removed
    with `emptyDir: null`)."""
    files: dict[str, str] = {}
    patches: list[dict] = []
    for doc, ch in result.changes:
        fname = f"patch-{dns_label(doc.kind)}-{dns_label(doc.name)}.yaml"
        pod: dict[str, Any] = {}
        if ch.init is not None:
            pod["initContainers"] = [ch.init]
        if ch.containers:
            pod["containers"] = [{"name": name, **parts} for name, parts in ch.containers.items()]
        if ch.volumes:
            pod["volumes"] = ch.volumes
        body: dict[str, Any] = {"spec": pod}
        for part in reversed(kube.POD_TEMPLATE_PATH[doc.kind]):
            body = {part: body}
        meta: dict[str, Any] = {"name": doc.name}
        if _ns(doc.obj):
            meta["namespace"] = _ns(doc.obj)
        files[fname] = dump({"apiVersion": doc.obj["apiVersion"], "kind": doc.kind, "metadata": meta, **body})
        target: dict[str, Any] = {"kind": doc.kind, "name": doc.name}
        if _ns(doc.obj):
            target["namespace"] = _ns(doc.obj)
        patches.append({"path": fname, "target": target})
    component: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component"}
    if result.generated:
        files[RESOURCES_FILE] = "".join("---\n" + dump(o) for o in result.generated)
        component["resources"] = [RESOURCES_FILE]
    if patches:
        component["patches"] = patches
    head = ("# Written by `volinit fix -k --kustomize`: the same change as `volinit fix -k`, for manifests\n"
            "# kept as they are. Use it from your kustomization.yaml:  components: [<this dir>]\n")
    files[KUSTOMIZATION] = head + "".join(_comment(n) for n in result.notes) + dump(component)
    return files


# --- the command ---------------------------------------------------------------------------

def all_manifests(files: list[str]) -> bool:
    """`fix -f FILE` where every FILE is a Kubernetes manifest: the same as -k."""
    return bool(files) and all(kube.looks_like_manifest(f) for f in files)


def run(manifests: list[str], out: Optional[str], kustomize: Optional[str], owner_flags: list[str],
        image: Optional[str], dry_run: bool, spec_file: Optional[str], say: Callable[[str], None]) -> int:
    """`volinit fix -k`: the patched stream to stdout or -o OUT, and --kustomize DIR."""
    import os
    import sys

    from volinit.errors import UsageError
    from volinit.host import fix as composefix
    from volinit.host import rules
    from volinit.host.engine import connect

    if not manifests:
        raise UsageError("--kustomize" if kustomize else "--image", "", "only applies with -k",
                         "name the manifests: volinit fix -k FILE")
    if spec_file:
        raise UsageError("--spec-file", "", "does not apply with -k", "the spec goes into a ConfigMap in the output")
    if image is not None:
        _check_image(image)
    owners = composefix.parse_owners(owner_flags)
    docs = kube.load(manifests)
    inputs = {os.path.realpath(f) for f in kube.manifest_files(manifests)}
    if out and out != "-" and os.path.realpath(out) in inputs and not _ours(out, HEADER):
        raise UsageError("-o", out, "is one of the manifests read", "volinit fix never writes your own files; "
                         "name a new file (or use --kustomize to leave the manifests as they are)")
    if kustomize:
        k = os.path.join(kustomize, KUSTOMIZATION)
        if os.path.exists(k) and not _ours(k, "# Written by `volinit fix -k --kustomize`"):
            raise UsageError("--kustomize", kustomize, f"holds a {KUSTOMIZATION} volinit did not write",
                             "name a new dir for the component")
    client, _ = connect(required=False)
    with kube.image_facts_from(client) as facts:
        result = fix(docs, owners=owners, image=image or DEFAULT_IMAGE, min_temp=rules.DEFAULT_MIN_TEMP,
                     image_facts=facts)
    for line in result.lines:
        say(line)
    for note in result.notes:
        say(f"note: {note}")
    if not result.changes:
        say("nothing to fix: the static checks find nothing in the manifests; the output is the input")
    if dry_run:
        sys.stdout.write(result.text)
        if kustomize:
            for name, text in sorted(kustomize_files(result).items()):
                sys.stdout.write(f"# --- {os.path.join(kustomize, name)} ---\n{text}")
        say("dry run: nothing written")
        return 0
    if not out or out == "-":
        sys.stdout.write(result.text)
    else:
        _write(out, result.text)
        say(f"wrote {out}; apply it with: kubectl apply -f {out}")
    if kustomize:
        os.makedirs(kustomize, exist_ok=True)
        for name, text in sorted(kustomize_files(result).items()):
            _write(os.path.join(kustomize, name), text)
        say(f"wrote the kustomize component {kustomize}; add it to your kustomization.yaml: "
            f"components: [{kustomize}]")
    return 0


def _check_image(image: str) -> None:
    from volinit.errors import UsageError

    if not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", image) or len(image) > 255:
        raise UsageError("--image", repr(image), "not an image reference", "e.g. ghcr.io/volinit/volinit:0.1")


def _ours(path: str, head: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(len(head)) == head
    except (OSError, UnicodeDecodeError):
        return False


def _write(path: str, text: str) -> None:
    """Write text unless the file holds it already (a rerun leaves mtimes alone), through a
    temp file and rename so a reader never sees half of it."""
    import os
    import tempfile

    from volinit.errors import OperationError

    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return
    except (OSError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".volinit-", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise OperationError("cannot write", path, exc.strerror or str(exc), "check the path and its dir") from None
