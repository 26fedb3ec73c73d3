"""Every Kubernetes manifest in the repo, and every manifest `fix -k` writes, against the
real Kubernetes OpenAPI schemas of several minor versions (kubernetes-validate bundles
them, so this runs offline), strict: an unknown field is an error, as the API server's
field validation makes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate  # the dev extra: CI must have it
import pytest
import yaml

from tests.conftest import REPO, unavailable
from volinit.host import kube, kubefix, rules

VERSIONS = ("1.30.0", "1.33.0", "1.35.0")
SKIP_DIRS = {".git", ".venv", ".cache", "node_modules", "__pycache__"}


def repo_manifests() -> list[Path]:
    """Every YAML file in the repo that is a Kubernetes manifest, less the kustomize
    component files (a kustomization and its patches are partial objects by design; what
    they build is checked in tests/test_kube.py against fix's full output)."""
    found, patches = [], set()
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if name in ("kustomization.yaml", "kustomization.yml"):
                k = yaml.safe_load(p.read_text()) or {}
                patches |= {(p.parent / x["path"]).resolve() for x in k.get("patches") or [] if "path" in x}
            elif name.endswith((".yaml", ".yml")) and kube.looks_like_manifest(str(p)):
                found.append(p)
    return [p for p in found if p.resolve() not in patches]


def validate_all(objects: list[dict], where: str) -> None:
    for obj in objects:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where}: {obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: "
                            f"{exc.message} at {list(exc.path)}", pytrace=False)


def test_the_repo_has_the_seed_manifests() -> None:
    names = {str(p.relative_to(REPO)) for p in repo_manifests()}
    for seed in ("000-read-only-root-no-tmp", "002-cache-in-site-packages", "003-small-emptydir-model-download",
                 "004-state-in-emptydir"):
        assert f"deploy/kubernetes/{seed}/before/manifest.yaml" in names
        assert f"deploy/kubernetes/{seed}/after/manifest.yaml" in names
        assert f"deploy/kubernetes/{seed}/after/kustomize/volinit-resources.yaml" in names


@pytest.mark.parametrize("path", repo_manifests(), ids=lambda p: str(p.relative_to(REPO)))
def test_repo_manifest_validates(path: Path) -> None:
    validate_all([o for o in yaml.safe_load_all(path.read_text()) if o], str(path.relative_to(REPO)))


def test_validation_catches_a_broken_object() -> None:
    """The check above can fail: a wrong type and an unknown field are both refused."""
    path = REPO / "deploy/kubernetes/003-small-emptydir-model-download/after/manifest.yaml"
    deploy = next(o for o in yaml.safe_load_all(path.read_text()) if o and o["kind"] == "Deployment")
    init = deploy["spec"]["template"]["spec"]["initContainers"][0]
    init["securityContext"]["runAsUser"] = "0"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSIONS[0], strict=True)
    init["securityContext"]["runAsUser"] = 0
    init["securityContext"]["runAsUsr"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, VERSIONS[-1], strict=True)


POD_SPEC = """\
securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000}
containers:
  - name: app
    image: example/app:1
    env: [{name: HF_HOME, value: /data/hf}]
    securityContext: {readOnlyRootFilesystem: true}
    volumeMounts: [{name: data, mountPath: /data}, {name: scratch, mountPath: /tmp}]
  - name: sidecar
    image: example/sidecar:1
    securityContext: {runAsUser: 1000, readOnlyRootFilesystem: true}
    volumeMounts: [{name: data, mountPath: /var/lib/sidecar, subPath: side}]
volumes:
  - {name: scratch, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
"""
PVC = "  - {name: data, persistentVolumeClaim: {claimName: data}}\n"


def _nest(text: str, n: int) -> str:
    return "".join(" " * n + line if line.strip() else line for line in text.splitlines(True))


WORKLOADS = {
    "Pod": "apiVersion: v1\nkind: Pod\nmetadata: {name: w, namespace: team}\nspec:\n" + _nest(POD_SPEC + PVC, 2),
    "Deployment": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  replicas: 2\n"
                  "  selector: {matchLabels: {app: w}}\n  template:\n    metadata: {labels: {app: w}}\n    spec:\n"
                  + _nest(POD_SPEC + PVC, 6),
    "StatefulSet": "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: w}\nspec:\n  serviceName: w\n"
                   "  selector: {matchLabels: {app: w}}\n  volumeClaimTemplates:\n  - metadata: {name: data}\n"
                   "    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n"
                   "  template:\n    metadata: {labels: {app: w}}\n    spec:\n" + _nest(POD_SPEC, 6),
    "DaemonSet": "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: w}\nspec:\n"
                 "  selector: {matchLabels: {app: w}}\n  template:\n    metadata: {labels: {app: w}}\n    spec:\n"
                 + _nest(POD_SPEC + PVC, 6),
    "Job": "apiVersion: batch/v1\nkind: Job\nmetadata: {name: w}\nspec:\n  template:\n    spec:\n"
           "      restartPolicy: Never\n" + _nest(POD_SPEC + PVC, 6),
    "CronJob": "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: w}\nspec:\n  schedule: '0 3 * * *'\n"
               "  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n"
               + _nest(POD_SPEC + PVC, 10),
}


@pytest.mark.parametrize("kind", sorted(WORKLOADS))
def test_fix_output_validates_and_checks_clean_for_every_kind(kind: str, tmp_path: Path) -> None:
    src = tmp_path / "in.yaml"
    src.write_text(WORKLOADS[kind])
    validate_all([yaml.safe_load(WORKLOADS[kind])], f"{kind} input")
    docs = kube.load([str(src)])
    before = rules.static_findings(kube.workloads(docs), min_temp=rules.DEFAULT_MIN_TEMP)
    # the claim is root's; the app downloads (HF_HOME) through a 64Mi /tmp; the sidecar has a
    # read-only root and nothing at /tmp
    assert {(f.id, f.service.rsplit("/", 1)[-1]) for f in before} == {
        ("volume-not-owned", "app"), ("volume-not-owned", "sidecar"), ("temp-too-small", "app"),
        ("no-temp-dir", "sidecar")}
    result = kubefix.fix(docs, min_temp=rules.DEFAULT_MIN_TEMP)
    validate_all(result.objects, f"fix -k of a {kind}")
    out = tmp_path / "out.yaml"
    out.write_text(result.text)
    after = kube.load([str(out)])
    assert rules.static_findings(kube.workloads(after), min_temp=rules.DEFAULT_MIN_TEMP) == []
    assert kubefix.fix(after, min_temp=rules.DEFAULT_MIN_TEMP).text == result.text
    pod = kube.pods(after)[0]
    init = pod.spec["initContainers"][0]
    mounts = [(m["name"], m["mountPath"], m.get("subPath")) for m in init["volumeMounts"]]
    # the claim where the app sees it, and the sidecar's subPath where the sidecar does
    assert mounts[1:] == [("data", "/data", None), ("data", "/var/lib/sidecar", "side")]
    if kind == "Pod":
        cm = next(o for o in result.objects if o["kind"] == "ConfigMap")
        assert cm["metadata"]["namespace"] == "team"  # beside the pod that mounts it
    files = kubefix.kustomize_files(result)
    validate_all([o for o in yaml.safe_load_all(files[kubefix.RESOURCES_FILE]) if o], f"{kind} component")


def test_validation_runs_offline(tmp_path: Path) -> None:
    """No network namespace, no schema download: the bundled schemas answer."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("needs root and unshare(1) for a network namespace")
    code = ("import sys, yaml, kubernetes_validate as kv\n"
            "for o in yaml.safe_load_all(open(sys.argv[1])):\n"
            "    o and [kv.validate(o, v, strict=True) for v in sys.argv[2:]]\n")
    path = REPO / "deploy/kubernetes/004-state-in-emptydir/after/manifest.yaml"
    res = subprocess.run(["unshare", "-n", sys.executable, "-c", code, str(path), *VERSIONS],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
