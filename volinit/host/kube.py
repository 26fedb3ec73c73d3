"""Kubernetes manifests to the neutral workload model: one Workload per container.

The reader decides nothing: it says who each container runs as, what is mounted where, its
environment, replicas and whether a volinit initContainer gates it; the rules in
`volinit.host.rules` decide the findings. It reads files only: no cluster, no kubectl.

What the manifest cannot tell is said, not guessed: with no runAsUser the image's USER
decides, and the uid is unknown unless the image is present on the local Docker engine.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

from volinit.errors import UsageError
from volinit.host.workload import BIND, CONFIG, SCRATCH, TMPFS, VOLUME, Mount, User, Workload

# The kinds that carry a pod template, and where it sits in each.
POD_TEMPLATE_PATH: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# A pod annotation naming dirs whose data must outlive the pod (compose: x-volinit.persist).
PERSIST_ANNOTATION = "volinit/persist"
EMPTYDIR_MODE = 0o777  # the kubelet makes an emptyDir root:root drwxrwxrwx
# Volume sources whose content is read-only by construction.
CONFIG_SOURCES = ("configMap", "secret", "projected", "downwardAPI", "image")
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)"
                       r"(?:(Ki|Mi|Gi|Ti|Pi|Ei)|([numkMGTPE])|[eE]([+-]?[0-9]+))?$")
_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
# Env vars that name dirs the rules look at (the compose reader stats the same ones).
_ENV_PATHS = ("TMPDIR", "TEMP", "TMP", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME", "HOME")
_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ManifestError(UsageError):
    """A manifest volinit cannot read: exit 2, naming the file and the document."""

    def __init__(self, where: str, why: str, fix: str = "") -> None:
        super().__init__("manifest", where, why, fix)


@dataclass(frozen=True)
class Document:
    """One object of a manifest file; index counts documents from 1, as a reader would."""

    file: str
    index: int
    obj: dict
    item: Optional[int] = None  # position in a kind: List, from 1

    @property
    def where(self) -> str:
        text = f"{self.file} document {self.index}"
        return text if self.item is None else f"{text} item {self.item}"

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""


@dataclass(frozen=True)
class Pod:
    """A pod template inside one document, and the workloads read from its containers."""

    doc: Document
    template: dict  # the pod template ({metadata, spec}); the Pod object itself for kind Pod
    workloads: tuple[Workload, ...] = ()
    containers: tuple[str, ...] = ()  # container names, in the order of workloads

    @property
    def spec(self) -> dict:
        return self.template["spec"]


# --- reading files -----------------------------------------------------------------------

def manifest_files(paths: list[str]) -> list[str]:
    """FILE or DIR arguments to files: a dir gives its *.yaml, *.yml and *.json, sorted
    (not recursive, like kubectl apply -f DIR)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p)
                           if n.endswith(MANIFEST_SUFFIXES) and os.path.isfile(os.path.join(p, n)))
            if not found:
                raise ManifestError(p, "no *.yaml, *.yml or *.json files in this dir", "name a manifest file")
            out += found
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ManifestError(p, "no such file or dir", "check the -k path")
    return out


def _yaml_documents(path: str) -> Iterator[tuple[int, Any]]:
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, f"cannot read it: {exc}", "check the file") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    index = 0
    try:
        _check_depth(yaml, text, path, loader)
        for index, data in enumerate(yaml.load_all(text, Loader=loader), start=1):  # noqa: S506 - safe loader
            yield index, data
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ManifestError(f"{path} document {index + 1}{at}", f"bad YAML: {exc.problem or exc.context}",
                            "fix the YAML syntax there") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{path} document {index + 1}", f"bad YAML: {exc}", "fix the YAML syntax") from None


MAX_DEPTH = 64  # a pod spec nests about 12 deep; a CronJob's about 16


def _check_depth(yaml: Any, text: str, path: str, loader: Any) -> None:
    """Refuse deep nesting before loading: the C loader builds nodes recursively, and a
    small file of brackets overflows its stack (a crash, not an error)."""
    depth, doc = 0, 0
    try:
        events = list(_events(yaml, text, loader, MAX_DEPTH))
    except yaml.YAMLError:
        return  # bad syntax: the load below reports it with its document
    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            doc += 1
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ManifestError(f"{path} document {doc} line {mark.line + 1} column {mark.column + 1}",
                                    f"nested deeper than {MAX_DEPTH} levels", "no Kubernetes object nests this deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _events(yaml: Any, text: str, loader: Any, limit: int) -> Iterator[Any]:
    """Parser events up to one nesting level past the limit (no need to read further)."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        yield event
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > limit:
                return
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load(paths: list[str]) -> list[Document]:
    """Every object in the files, in order; empty documents are skipped, as kubectl does."""
    docs: list[Document] = []
    for path in manifest_files(paths):
        for index, data in _yaml_documents(path):
            if data is None:
                continue
            doc = Document(path, index, data)
            _check_object(doc)
            if doc.kind == "List" or (doc.kind.endswith("List") and isinstance(data.get("items"), list)):
                items = data.get("items")
                if not isinstance(items, list):
                    raise ManifestError(doc.where, "items: not a list", "a List holds its objects under items:")
                for n, item in enumerate(items, start=1):
                    sub = Document(path, index, item, n)
                    _check_object(sub)
                    docs.append(sub)
            else:
                docs.append(doc)
    return docs


def _check_object(doc: Document) -> None:
    if not isinstance(doc.obj, dict):
        raise ManifestError(doc.where, f"not a mapping but a {type(doc.obj).__name__}",
                            "each document must be one Kubernetes object with apiVersion and kind")
    for key in ("apiVersion", "kind"):
        value = doc.obj.get(key)
        if not isinstance(value, str) or not value:
            raise ManifestError(doc.where, f"no {key}", f"every Kubernetes object needs {key}:")
    # what every writer here reads of any object: its name, namespace and labels
    at = _At(doc)
    meta = at.map(doc.obj, ".", "metadata")
    at.str(meta, "metadata", "name")
    at.str(meta, "metadata", "namespace")
    at.map(meta, "metadata", "labels")
    at.map(meta, "metadata", "annotations")


def looks_like_manifest(path: str) -> bool:
    """A file whose every document has apiVersion and kind: a Kubernetes manifest, not a
    compose file (which has neither), so `check -f` can hand it to this reader."""
    if not os.path.isfile(path):
        return False
    try:
        docs = [d for _, d in _yaml_documents(path) if d is not None]
    except ManifestError:
        return False
    return bool(docs) and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in docs)


# --- typed access with key paths in errors -------------------------------------------------

class _At:
    """Reads one object's fields, naming the key path when one has the wrong type."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def fail(self, key: str, why: str, fix: str = "") -> ManifestError:
        return ManifestError(f"{self.doc.where} at {key}", why,
                             fix or "fix the manifest (kubectl apply would refuse it)")

    def map(self, d: Any, key: str, name: str) -> dict:
        v = self.get(d, key, name)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(f"{key}.{name}", f"expected a mapping, got {type(v).__name__}")
        return v

    def get(self, d: Any, key: str, name: str) -> Any:
        if not isinstance(d, dict):
            raise self.fail(key or ".", f"expected a mapping, got {type(d).__name__}")
        return d.get(name)

    def list(self, d: dict, key: str, name: str) -> list:
        v = self.get(d, key, name)
        if v is None:
            return []
        if not isinstance(v, list):
            raise self.fail(f"{key}.{name}", f"expected a list, got {type(v).__name__}")
        return v

    def int(self, d: dict, key: str, name: str) -> Optional[int]:
        v = self.get(d, key, name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise self.fail(f"{key}.{name}", f"expected a whole number >= 0, got {v!r}")
        return v

    def bool(self, d: dict, key: str, name: str) -> Optional[bool]:
        v = self.get(d, key, name)
        if v is None:
            return None
        if not isinstance(v, bool):
            raise self.fail(f"{key}.{name}", f"expected true or false, got {v!r}")
        return v

    def str(self, d: dict, key: str, name: str) -> str:
        v = self.get(d, key, name)
        if v is None:
            return ""
        if not isinstance(v, str):
            raise self.fail(f"{key}.{name}", f"expected a string, got {v!r}")
        return v


def parse_quantity(value: Any) -> int:
    """A Kubernetes quantity ("512Mi", "1G", "1e9", 1024) in bytes, rounded up."""
    import math

    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(value)
    number, binary, decimal, exp = m.groups()
    n = float(number)
    if binary:
        n *= _BINARY[binary]
    elif decimal:
        n *= _DECIMAL[decimal]
    elif exp:
        n *= 10 ** int(exp)
    return int(math.ceil(n))


def pod_template(doc: Document) -> Optional[dict]:
    """The pod template of a workload kind (the Pod itself for kind Pod); None for others."""
    path = POD_TEMPLATE_PATH.get(doc.kind)
    if path is None:
        return None
    at = _At(doc)
    node: Any = doc.obj
    key = ""
    for part in path:
        node = at.map(node, key or ".", part)
        key = f"{key}.{part}" if key else part
    if "spec" not in node or not isinstance(node.get("spec"), dict):
        raise at.fail(f"{key}.spec" if key else "spec", "no pod spec", "a workload needs its pod spec")
    return node


# --- the pod spec to workloads ---------------------------------------------------------

def _replicas(doc: Document, at: _At) -> int:
    spec = at.map(doc.obj, "", "spec")
    if doc.kind in ("Deployment", "StatefulSet"):
        n = at.int(spec, "spec", "replicas")
        return 1 if n is None else n
    if doc.kind == "Job":
        n = at.int(spec, "spec", "parallelism")
        return 1 if n is None else n
    if doc.kind == "CronJob":
        job = at.map(at.map(spec, "spec", "jobTemplate"), "spec.jobTemplate", "spec")
        n = at.int(job, "spec.jobTemplate.spec", "parallelism")
        return 1 if n is None else n
    return 1  # a Pod; a DaemonSet has one per node, and no two of them share an emptyDir


def _claim_templates(doc: Document, at: _At) -> set[str]:
    if doc.kind != "StatefulSet":
        return set()
    spec = at.map(doc.obj, "", "spec")
    names = set()
    for i, t in enumerate(at.list(spec, "spec", "volumeClaimTemplates")):
        meta = at.map(t, f"spec.volumeClaimTemplates[{i}]", "metadata")
        name = at.str(meta, f"spec.volumeClaimTemplates[{i}].metadata", "name")
        if name:
            names.add(name)
    return names


def _volume_mount(vol: dict, name: str, key: str, at: _At) -> Mount:
    """What one pod volume is to the rules: its kind, size, source and writability."""
    if "emptyDir" in vol:  # `emptyDir:` with no value is an emptyDir too
        ed = at.map(vol, key, "emptyDir")
        size = None
        if ed.get("sizeLimit") is not None:
            try:
                size = parse_quantity(ed["sizeLimit"])
            except ValueError:
                raise at.fail(f"{key}.emptyDir.sizeLimit", f"not a quantity: {ed['sizeLimit']!r}",
                              "write a size such as 512Mi or 2Gi") from None
        if ed.get("medium") == "Memory":
            return Mount("", TMPFS, source=name, size=size, mode=EMPTYDIR_MODE)
        return Mount("", SCRATCH, source=name, size=size)
    if "persistentVolumeClaim" in vol:
        pvc = at.map(vol, key, "persistentVolumeClaim")
        claim = at.str(pvc, f"{key}.persistentVolumeClaim", "claimName")
        # never filled from the image (Docker copies the image's dir into a new named volume,
        # Kubernetes does not): a new claim's root is what the provisioner made, 0:0 on most
        return Mount("", VOLUME, source=claim or name, read_only=bool(at.bool(pvc, key, "readOnly")),
                     no_copy=True, image_dir=False)
    if "hostPath" in vol:
        hp = at.map(vol, key, "hostPath")
        return Mount("", BIND, source=at.str(hp, f"{key}.hostPath", "path"))
    if "ephemeral" in vol:
        # a generic ephemeral volume: a PVC made for the pod and deleted with it
        return Mount("", SCRATCH, source=name)
    for src in CONFIG_SOURCES:
        if src in vol:
            return Mount("", CONFIG, source=name, read_only=True)
    # nfs, csi, iscsi, cloud disks...: storage that outlives the pod, like a PVC
    other = [k for k in vol if k != "name"]
    return Mount("", VOLUME, source=f"{other[0]}:{name}" if other else name)


def _env(container: dict, key: str, at: _At) -> tuple[dict[str, str], list[str]]:
    """The container's env as Kubernetes expands it ($(VAR) to earlier values), and the
    names whose value comes from elsewhere (valueFrom, envFrom) and is unknown here."""
    values: dict[str, str] = {}
    unknown: list[str] = []
    for i, e in enumerate(at.list(container, key, "env")):
        k = f"{key}.env[{i}]"
        if not isinstance(e, dict):
            raise at.fail(k, "expected a mapping with name and value")
        name = at.str(e, k, "name")
        if not name:
            raise at.fail(k, "no name")
        if e.get("valueFrom") is not None:
            values.pop(name, None)
            unknown.append(name)
            continue
        raw = e.get("value", "")
        raw = "" if raw is None else raw
        if not isinstance(raw, str):
            raise at.fail(f"{k}.value", f"expected a string, got {raw!r}", "quote it")

        def expand(m: re.Match, seen: dict[str, str] = values) -> str:
            if m.group(0) == "$$":
                return "$"
            return seen.get(m.group(1), m.group(0))

        values[name] = _ENV_REF.sub(expand, raw)
        if name in unknown:
            unknown.remove(name)
    for i, _ in enumerate(at.list(container, key, "envFrom")):
        unknown.append(f"envFrom[{i}]")
    return values, unknown


def subpath_source(source: str, sub: str) -> str:
    """A claim mounted with a subPath is, to the rules and the planner, its own volume: its
    root is that dir, which the kubelet makes (as root) when it is missing."""
    sub = posixpath.normpath(sub).strip("/") if sub else ""
    return f"{source}/{sub}" if sub and sub != "." else source


def is_volinit_image(image: str) -> bool:
    """ghcr.io/volinit/volinit:0.1, volinit:test, registry:5000/volinit@sha256:...: the
    repository's last path component is volinit."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "volinit"


def _gates(spec: dict, at: _At, volumes: dict[str, Mount]) -> tuple[str, tuple[str, ...]]:
    """The initContainer that gates the pod's containers, and the volume sources it mounts:
    one running the volinit image, or a root one-shot that chowns."""
    for i, ic in enumerate(at.list(spec, "spec", "initContainers")):
        key = f"spec.initContainers[{i}]"
        if not isinstance(ic, dict):
            raise at.fail(key, "expected a mapping")
        image = at.str(ic, key, "image")
        words = [str(w) for w in (at.list(ic, key, "command") + at.list(ic, key, "args"))]
        chowns = any(re.search(r"(^|[\s/;&|])chown(\s|$)", w) for w in words)
        if is_volinit_image(image) or chowns:
            mounted = []
            for j, vm in enumerate(at.list(ic, key, "volumeMounts")):
                name = at.str(vm, f"{key}.volumeMounts[{j}]", "name")
                if name in volumes:
                    sub = at.str(vm, f"{key}.volumeMounts[{j}]", "subPath") or \
                        at.str(vm, f"{key}.volumeMounts[{j}]", "subPathExpr")
                    mounted.append(subpath_source(volumes[name].source, sub))
            return f"initContainer {at.str(ic, key, 'name') or i}", tuple(mounted)
    return "", ()


def pods(docs: list[Document], image_facts: Optional[Callable[[str], Any]] = None) -> list[Pod]:
    """Every workload object's pod template with one Workload per container; other kinds
    (Services, ConfigMaps, ...) are skipped. image_facts(ref) gives the image's facts
    (volinit.host.image.ImageFacts) when a Docker engine answers, else is None."""
    out: list[Pod] = []
    for doc in docs:
        template = pod_template(doc)
        if template is None:
            continue
        out.append(_read_pod(doc, template, image_facts))
    return out


def workloads(docs: list[Document], image_facts: Optional[Callable[[str], Any]] = None) -> list[Workload]:
    return [w for p in pods(docs, image_facts) for w in p.workloads]


@contextlib.contextmanager
def image_facts_from(client: Any) -> Iterator[Optional[Callable[[str], Any]]]:
    """The image_facts callable for pods(), reading images on the engine client talks to
    (None: no engine, and every uid the manifest does not give stays unknown). The reader's
    throwaway containers go when the block ends."""
    if client is None:
        yield None
        return
    from volinit.host.image import ImageReader

    reader = ImageReader(client)
    try:
        yield lambda ref: reader.get(ref)
    finally:
        reader.close()


def load_workloads(paths: list[str], services: list[str], client: Any = None) -> list[Workload]:
    """`check -k`: the workloads of the manifests (or only the named ones)."""
    docs = load(paths)
    with image_facts_from(client) as facts:
        found = workloads(docs, facts)
    names = [w.name for w in found]
    unknown = [s for s in services if s not in names]
    if unknown:
        raise UsageError("--service", unknown[0], "names no container in the manifests",
                         f"containers: {', '.join(names) or 'none'}")
    return [w for w in found if not services or w.name in services]


def _user(uid: Optional[int], gid: Optional[int], where: str, image: str, facts: Any,
          nonroot: Optional[bool]) -> tuple[User, tuple[int, ...], str]:
    """Who the container runs as: (user, the image's supplementary gids, passwd home)."""
    from volinit.host.image import resolve_user

    present = facts is not None and facts.present
    if uid is not None:
        # no runAsGroup: the runtime takes the primary gid from the image's passwd entry
        _, img_gid, extra, home, _ = resolve_user(str(uid), facts) if present else (None, None, (), "", "")
        return User(uid, gid if gid is not None else img_gid, source=f"runAsUser ({where})"), extra, home
    if present:
        r_uid, r_gid, extra, home, why = resolve_user(facts.user, facts)
        source = f"image {image} USER" if facts.user else f"image {image} (no USER: root)"
        return User(r_uid, gid if gid is not None else r_gid, source, why), extra, home
    why = f"runAsUser is not set, so the USER of image {image or '(none)'} decides, and "
    why += facts.why if facts is not None else "the image was not read (no Docker engine)"
    if nonroot:
        why += "; runAsNonRoot: true says only that it is not 0"
    return User(None, gid, unknown_why=why + " (set runAsUser, or make the image present)"), (), ""


def _read_pod(doc: Document, template: dict, image_facts: Optional[Callable[[str], Any]]) -> Pod:
    at = _At(doc)
    base = ".".join(POD_TEMPLATE_PATH[doc.kind])
    pkey = f"{base}.spec" if base else "spec"
    spec = template["spec"]
    if not doc.name:
        raise at.fail("metadata.name", "no name", "every object needs metadata.name")
    claims = _claim_templates(doc, at)
    volumes: dict[str, Mount] = {}
    for i, v in enumerate(at.list(spec, pkey, "volumes")):
        k = f"{pkey}.volumes[{i}]"
        if not isinstance(v, dict):
            raise at.fail(k, "expected a mapping")
        name = at.str(v, k, "name")
        if not name:
            raise at.fail(k, "no name")
        volumes[name] = _volume_mount(v, name, k, at)
    for claim in sorted(claims):
        volumes.setdefault(claim, Mount("", VOLUME, source=claim, no_copy=True, image_dir=False))
    psk = f"{pkey}.securityContext"
    psc = at.map(spec, pkey, "securityContext")
    pod_uid = at.int(psc, psk, "runAsUser")
    pod_gid = at.int(psc, psk, "runAsGroup")
    pod_nonroot = at.bool(psc, psk, "runAsNonRoot")
    fs_group = at.int(psc, psk, "fsGroup")
    supplemental = [g for g in at.list(psc, psk, "supplementalGroups") if isinstance(g, int)]
    meta = at.map(template, base or ".", "metadata")
    annotations = at.map(meta, f"{base}.metadata" if base else "metadata", "annotations")
    persist = tuple(p for p in re.split(r"[\s,]+", str(annotations.get(PERSIST_ANNOTATION) or "")) if p)
    gate, gated_volumes = _gates(spec, at, volumes)
    replicas = _replicas(doc, at)
    containers = at.list(spec, pkey, "containers")
    if not containers:
        raise at.fail(f"{pkey}.containers", "no containers", "a pod needs at least one container")
    prefix = f"{doc.kind.lower()}/{doc.name}"
    loaded: list[Workload] = []
    names: list[str] = []
    for ci, c in enumerate(containers):
        ckey = f"{pkey}.containers[{ci}]"
        if not isinstance(c, dict):
            raise at.fail(ckey, "expected a mapping")
        cname = at.str(c, ckey, "name")
        if not cname:
            raise at.fail(ckey, "no name")
        image = at.str(c, ckey, "image")
        sk = f"{ckey}.securityContext"
        csc = at.map(c, ckey, "securityContext")
        c_uid = at.int(csc, sk, "runAsUser")
        c_gid = at.int(csc, sk, "runAsGroup")
        nonroot = at.bool(csc, sk, "runAsNonRoot")
        nonroot = pod_nonroot if nonroot is None else nonroot
        read_only = bool(at.bool(csc, sk, "readOnlyRootFilesystem"))
        env, unknown_env = _env(c, ckey, at)
        facts: Any = image_facts(image) if image_facts is not None and image else None
        present = facts is not None and facts.present
        notes: list[str] = []
        if image_facts is not None and facts is not None and not facts.present:
            notes.append(facts.why)
        user, extra, passwd_home = _user(c_uid if c_uid is not None else pod_uid,
                                         c_gid if c_gid is not None else pod_gid,
                                         "container" if c_uid is not None else "pod", image, facts, nonroot)
        if not user.known:
            notes.append(f"uid unknown: {user.unknown_why}")
        elif user.unknown_why:
            notes.append(user.unknown_why)
        if nonroot and user.uid == 0:
            notes.append("runAsNonRoot: true but the uid is 0: the kubelet refuses to start this container")
        for name in unknown_env:
            notes.append(f"env {name} comes from valueFrom/envFrom: its value is unknown here")
        merged = dict(facts.env) if present else {}
        merged.update(env)
        if "HOME" in env:
            home, home_source = env["HOME"], "environment"
        elif "HOME" in merged:
            home, home_source = merged["HOME"], "image ENV"
        elif passwd_home:
            home, home_source = passwd_home, "passwd"
        elif present:
            home, home_source = "/", "default"
        else:
            home, home_source = "", ""
        working_dir = at.str(c, ckey, "workingDir") or (facts.working_dir if present else "") or "/"
        mounts: list[Mount] = []
        for mi, vm in enumerate(at.list(c, ckey, "volumeMounts")):
            mk = f"{ckey}.volumeMounts[{mi}]"
            if not isinstance(vm, dict):
                raise at.fail(mk, "expected a mapping")
            vname = at.str(vm, mk, "name")
            path = at.str(vm, mk, "mountPath")
            if vname not in volumes:
                raise at.fail(f"{mk}.name", f"no volume named {vname!r} in the pod",
                              "add it under volumes: (or volumeClaimTemplates: for a StatefulSet)")
            if not path.startswith("/"):
                raise at.fail(f"{mk}.mountPath", f"not an absolute path: {path!r}")
            vol = volumes[vname]
            ro = bool(at.bool(vm, mk, "readOnly")) or vol.read_only
            sub = at.str(vm, mk, "subPath") or at.str(vm, mk, "subPathExpr")
            if vol.kind == VOLUME and sub:
                vol = replace(vol, source=subpath_source(vol.source, sub))
            mounts.append(replace(vol, target=posixpath.normpath(path), read_only=ro))
        if present:
            _stat_paths(facts, mounts, merged, working_dir, home, persist)
        loaded.append(Workload(
            name=prefix if len(containers) == 1 else f"{prefix}/{cname}",
            image=image,
            user=user,
            read_only_root=read_only,
            mounts=tuple(mounts),
            env=tuple(sorted(merged.items())),
            working_dir=working_dir,
            home=home,
            replicas=replicas,
            gated=bool(gate),
            gate=gate,
            image_volumes=facts.volumes if present else (),
            persist=persist,
            source_file=doc.where,
            groups=tuple(g for g in (*extra, fs_group, *supplemental) if g is not None),
            home_source=home_source,
            image_present=None if image_facts is None else present,
            image_paths=facts.known_stats() if present else (),
            gated_volumes=gated_volumes,
            entrypoint=tuple(str(a) for a in at.list(c, ckey, "command")) or (facts.entrypoint if present else ()),
            notes=tuple(notes),
        ))
        names.append(cname)
    return Pod(doc, template, tuple(loaded), tuple(names))


def _stat_paths(facts: Any, mounts: list[Mount], env: dict[str, str], working_dir: str, home: str,
                persist: tuple[str, ...]) -> None:
    """Read the image's stat of every path the rules ask about (as the compose reader does)."""
    paths = {"/tmp", "/var/tmp", "/usr/tmp", working_dir, *persist, *(m.target for m in mounts)}
    paths |= {posixpath.join(working_dir, env[k]) for k in _ENV_PATHS if env.get(k)}
    paths |= {posixpath.join(working_dir, d) for d in re.split(r"[\s:]+", env.get("VOLINIT_DIRS", "")) if d}
    if home:
        paths |= {home, posixpath.join(home, ".cache")}
    for p in sorted(paths):
        cur = posixpath.normpath(p)
        while facts.stat(cur) is None and cur != "/":
            cur = posixpath.dirname(cur)


# --- findings in Kubernetes words ------------------------------------------------------------

# The rules speak compose (tmpfs:, named volumes, volinit repair); a manifest's reader gets
# the same finding with the fix it can apply. Rule ids, services and paths stay as they are.
_FIXES = {
    "no-temp-dir": "mount an emptyDir at /tmp, or set TMPDIR to a dir on a claim the container owns "
                   "(`volinit fix -k` writes it)",
    "cache-unwritable": "point the cache variable at a dir on a claim or emptyDir the container can write "
                        "(`volinit fix -k` writes it)",
    "temp-too-small": "set TMPDIR to a dir on a disk-backed claim, e.g. /app/cache/.tmp (`volinit fix -k` writes "
                      "it), or raise the emptyDir's sizeLimit",
    "volume-not-owned": "run the volinit initContainer before it (`volinit fix -k` writes it); fsGroup sets the "
                        "group only, and only on volume types that support it",
    "state-not-persistent": "mount a PersistentVolumeClaim there (`volinit fix -k` moves an emptyDir to a new claim)",
}
_WORDS = (
    ("nocopy is set, so a new volume's root is 0:0",
     "Kubernetes never fills a claim from the image, so a new claim's root is the provisioner's (0:0 on most)"),
    ("named volume ", "claim "),
    ("read_only root", "readOnlyRootFilesystem"),
    ("on scratch ", "on emptyDir "),
    ("tmpfs ", "memory emptyDir "),
    ("it is lost on restart", "it is lost when the pod is deleted or moves to another node"),
)


def in_kubernetes_words(f: Any) -> Any:
    """A finding of a workload read from a manifest, its message and fix in Kubernetes terms."""
    message = f.message
    for old, new in _WORDS:
        message = message.replace(old, new)
    return replace(f, message=message, fix=_FIXES.get(f.id, f.fix))
