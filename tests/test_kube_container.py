"""The initContainer `fix -k` writes, run with Docker exactly as its manifest says.

No cluster runs here (no registry, no kubelet). What a kubelet would do with the pod is
played with `docker run`: the initContainer's own command and args, user, capabilities,
no-new-privileges, read-only root, resource limits, env and mounts (the ConfigMap's spec
as a read-only file at the same path, each claim as a named volume at the same mountPath,
an emptyDir as a fresh mode-0777 volume, as the kubelet makes it), against claims an older
root container left 0:0. Then the patched main container's settings (its uid, read-only
root, TMPDIR and mounts) on a stand-in image, writing its temp file where the incident
could not.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.helpers import volinit
from volinit.host import kube

pytestmark = pytest.mark.docker
SEEDS = REPO / "deploy" / "kubernetes"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # fix reads the manifest alone
# A claim as an older root image left it (seed 003's "PermissionError: '/app/cache/datalab'").
OLD_ROOT_TREE = ("mkdir -p /v/datalab/models/text_recognition && for i in $(seq 1 300); do "
                 "echo x > /v/datalab/f$i; done && ln -s /etc/passwd /v/datalab/link && chown -R 0:0 /v && "
                 "chmod 0755 /v")


def docker(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}", pytrace=False)
    return res


class Pod:
    """One fixed pod from `fix -k`, its volumes as Docker volumes named with a unique prefix."""

    def __init__(self, seed: str, image: str, base: str, tmp: Path) -> None:
        res = volinit("fix", "-k", str(SEEDS / seed / "before"), "--image", image, env=NO_ENGINE)
        assert res.code == 0, res.err
        self.objects = [o for o in yaml.safe_load_all(res.out) if o]
        self.docs = kube.load([str(self._write(tmp / "fixed.yaml", res.out))])
        self.pod = next(p for p in kube.pods(self.docs))
        self.spec = self.pod.spec
        self.init = self.spec["initContainers"][0]
        self.base, self.tmp = base, tmp
        self.prefix = f"volinit-kube-{secrets.token_hex(4)}"
        self.volumes: dict[str, str] = {}  # pod volume name -> docker volume name
        self.config_dirs: dict[str, Path] = {}

    @staticmethod
    def _write(path: Path, text: str) -> Path:
        path.write_text(text)
        return path

    def prepare(self, old_root_claims: bool = True) -> None:
        for vol in self.spec.get("volumes") or []:
            name = vol["name"]
            if "configMap" in vol:
                cm = next(o for o in self.objects if o["kind"] == "ConfigMap"
                          and o["metadata"]["name"] == vol["configMap"]["name"])
                d = self.tmp / f"cm-{name}"
                d.mkdir()
                d.chmod(0o755)
                for key, text in cm["data"].items():
                    self._write(d / key, text).chmod(0o644)
                self.config_dirs[name] = d
            elif "persistentVolumeClaim" in vol:
                self.volumes[name] = self._volume(name)
                if old_root_claims:
                    self._run_base(name, OLD_ROOT_TREE)
            elif "emptyDir" in vol and vol["emptyDir"].get("medium") != "Memory":
                self.volumes[name] = self._volume(name)
                self._run_base(name, "chmod 0777 /v")  # the kubelet's emptyDir: 0777, root's

    def _volume(self, name: str) -> str:
        vname = f"{self.prefix}-{name}"
        docker("volume", "create", "--label", "volinit.test=kube", vname)
        return vname

    def _run_base(self, name: str, script: str) -> str:
        return docker("run", "--rm", "--network", "none", "-v", f"{self.volumes[name]}:/v", self.base,
                      "sh", "-c", script).stdout

    def tree(self, name: str) -> list[str]:
        """uid:gid mode path of every entry of a volume, and its ctime (to see what a run changed)."""
        out = self._run_base(name, "find /v -printf '%U:%G %m %C@ %p\\n' | sort -k4")
        return sorted(out.splitlines(), key=lambda line: line.split(" ", 3)[3])

    def run_args(self, c: dict, image: str) -> list[str]:
        """`docker run` flags for container c as the kubelet would start it in this pod."""
        pod_sc = self.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        args = ["run", "--rm", "--network", "none"]
        if uid is not None:
            args += ["--user", f"{uid}:{gid if gid is not None else 0}"]
        if pod_sc.get("fsGroup") is not None:
            args += ["--group-add", str(pod_sc["fsGroup"])]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        caps = sc.get("capabilities") or {}
        args += [f"--cap-drop={x}" for x in caps.get("drop") or []] + [f"--cap-add={x}" for x in caps.get("add") or []]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        limits = (c.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            args += ["--memory", str(kube.parse_quantity(limits["memory"]))]
        if "cpu" in limits:
            args += ["--cpus", str(limits["cpu"])]
        for e in c.get("env") or []:
            args += ["-e", f"{e['name']}={e['value']}"]
        by_name = {v["name"]: v for v in self.spec.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            assert "subPath" not in m, "the seeds mount no subPath"
            vol = by_name[m["name"]]
            if m["name"] in self.config_dirs:
                args += ["--mount", f"type=bind,src={self.config_dirs[m['name']]},dst={m['mountPath']},readonly"]
            elif m["name"] in self.volumes:
                ro = ",readonly" if m.get("readOnly") else ""
                args += ["--mount", f"type=volume,src={self.volumes[m['name']]},dst={m['mountPath']}{ro}"]
            else:  # emptyDir medium: Memory: a tmpfs of its sizeLimit, 0777 like every emptyDir
                size = kube.parse_quantity(vol["emptyDir"]["sizeLimit"])
                args += ["--mount", f"type=tmpfs,dst={m['mountPath']},tmpfs-size={size},tmpfs-mode=0777"]
        if c.get("command"):
            args += ["--entrypoint", c["command"][0], image, *c["command"][1:], *(c.get("args") or [])]
        else:
            args += [image, *(c.get("args") or [])]
        return args

    def cleanup(self) -> None:
        for vname in self.volumes.values():
            docker("volume", "rm", "-f", vname, check=False)


@pytest.fixture
def pod_for(volinit_image: str, base_image: str, tmp_path: Path) -> Iterator:
    made: list[Pod] = []

    def make(seed: str) -> Pod:
        tmp_path.chmod(0o755)  # the ConfigMap dirs are bind-mounted for any uid to read
        p = Pod(seed, volinit_image, base_image, tmp_path)
        made.append(p)
        p.prepare()
        return p

    yield make
    for p in made:
        p.cleanup()


def test_initcontainer_gives_root_owned_claims_to_the_uid_then_reruns_in_o1(pod_for, volinit_image: str) -> None:
    pod = pod_for("003-small-emptydir-model-download")
    assert pod.init["image"] == volinit_image
    claims = [m["name"] for m in pod.init["volumeMounts"] if m["name"] in pod.volumes]
    assert claims == ["cache", "models"]
    before = {name: pod.tree(name) for name in claims}
    assert all(line.startswith("0:0 ") for name in claims for line in before[name])

    first = docker(*pod.run_args(pod.init, volinit_image), check=False)
    assert first.returncode == 0, first.stderr
    after = {name: pod.tree(name) for name in claims}
    for name in claims:
        assert all(line.startswith("1000:1000 ") for line in after[name]), after[name]
    cache = {line.split(" ", 3)[3]: line.split(" ")[1] for line in after["cache"]}
    assert cache["/v/.tmp"] == "700"  # TMPDIR's dir, made by the init for uid 1000
    assert "/v/datalab/f300" in cache
    models = {line.split(" ", 3)[3] for line in after["models"]}
    assert "/v/torch" in models  # TORCH_HOME's dir, so the app need not make it

    second = docker(*pod.run_args(pod.init, volinit_image), check=False)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("walk skipped") == len(claims), second.stderr
    for name in claims:
        assert pod.tree(name) == after[name]  # owners, modes and ctimes: not one inode touched


def test_main_container_stages_a_download_bigger_than_its_memory_tmp(pod_for, volinit_image: str,
                                                                     base_image: str) -> None:
    """Seed 003's second failure: 600 MiB through tempfile with a 512Mi memory emptyDir at
    /tmp. The original container's settings fail with ENOSPC; the fixed ones write it into
    the claim, as uid 1000, on a read-only root."""
    pod = pod_for("003-small-emptydir-model-download")
    assert docker(*pod.run_args(pod.init, volinit_image), check=False).returncode == 0
    app = pod.spec["containers"][0]
    script = ("import json, os, tempfile\n"
              "with tempfile.NamedTemporaryFile(suffix='.safetensors') as f:\n"
              "    for _ in range(600):\n"
              "        f.write(b'\\0' * (1 << 20))\n"
              "    f.flush(); os.fsync(f.fileno())\n"
              "    print(json.dumps({'path': f.name, 'size': os.fstat(f.fileno()).st_size, 'uid': os.getuid()}))\n")
    fixed = docker(*pod.run_args({**app, "command": ["python3", "-c", script]}, base_image), check=False)
    assert fixed.returncode == 0, fixed.stderr
    got = json.loads(fixed.stdout)
    assert got["path"].startswith("/app/cache/.tmp/") and got["size"] == 600 << 20 and got["uid"] == 1000

    original = {**app, "env": [e for e in app["env"] if e["name"] != "TMPDIR"], "command": ["python3", "-c", script]}
    broken = docker(*pod.run_args(original, base_image), check=False)
    assert broken.returncode != 0 and "No space left on device" in broken.stderr


@pytest.mark.parametrize("seed", ["000-read-only-root-no-tmp", "002-cache-in-site-packages", "004-state-in-emptydir"])
def test_main_container_writes_its_temp_and_cache_files(pod_for, volinit_image: str, base_image: str,
                                                        seed: str) -> None:
    pod = pod_for(seed)
    init = docker(*pod.run_args(pod.init, volinit_image), check=False)
    assert init.returncode == 0, init.stderr
    app = pod.spec["containers"][0]
    script = ("import json, os, tempfile\n"
              "with tempfile.NamedTemporaryFile() as f:\n"
              "    f.write(b'x'); temp = f.name\n"
              "cache = os.environ.get('XDG_CACHE_HOME')\n"
              "if cache:\n"
              "    open(os.path.join(cache, 'probe'), 'w').close()\n"
              "state = os.environ.get('MEDIA_DIR')\n"
              "if state:\n"
              "    open(os.path.join(state, 'episode.mp3'), 'w').close()\n"
              "print(json.dumps({'temp': temp, 'uid': os.getuid()}))\n")
    res = docker(*pod.run_args({**app, "command": ["python3", "-c", script]}, base_image), check=False)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    tmpdir = next((e["value"] for e in app.get("env") or [] if e["name"] == "TMPDIR"), "/tmp")
    assert got == {"temp": got["temp"], "uid": 1000} and got["temp"].startswith(tmpdir.rstrip("/") + "/")
    if seed != "004-state-in-emptydir":
        # the same command with the manifest as it was: the incident
        before = kube.pods(kube.load([str(SEEDS / seed / "before")]))[0]
        old = {**before.spec["containers"][0], "command": ["python3", "-c", script]}
        pod.spec = before.spec
        broken = docker(*pod.run_args(old, base_image), check=False)
        assert broken.returncode != 0
        assert "No usable temporary directory" in broken.stderr or "Read-only file system" in broken.stderr


def test_the_local_image_answers_the_uid_the_manifest_leaves_out(base_image: str, tmp_path: Path) -> None:
    """No runAsUser: the image's USER decides. With the image on the engine, check -k reads
    it (here 1000:1000) and finds the root-owned claim; without it the uid is unknown."""
    tag = f"volinit-kube-user:{secrets.token_hex(4)}"
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nUSER 1000:1000\n")
    docker("build", "-q", "-t", tag, str(tmp_path))
    try:
        manifest = tmp_path / "pod.yaml"
        manifest.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n"
            f"    - name: web\n      image: {tag}\n      volumeMounts: [{{name: data, mountPath: /data}}]\n"
            "  volumes: [{name: data, persistentVolumeClaim: {claimName: web-data}}]\n")
        res = volinit("check", "-k", str(manifest), "--json")
        doc = json.loads(res.out)
        assert res.code == 1
        assert doc["services"][0]["user"] == "1000:1000"
        assert [(f["id"], f["path"]) for f in doc["findings"]] == [("volume-not-owned", "/data")]
        absent = manifest.read_text().replace(tag, "example/absent:1")
        manifest.write_text(absent)
        doc = json.loads(volinit("check", "-k", str(manifest), "--json").out)
        assert doc["services"][0]["user"] is None
        assert any("runAsUser is not set" in n for n in doc["services"][0]["notes"])
    finally:
        docker("rmi", "-f", tag, check=False)
