"""Every compose example, brought up for real, as a user would: `docker compose up --wait`.

One test runs them all (a new directory under compose-examples/ is picked up by itself),
twice each: on fresh volumes, and on old volumes that a root container created and filled
before the service ran as uid 1000, as seed 003's cache volumes were. Each run checks what
a user would: `up` exits 0, the init service exited 0, and the service user can write
through TMPDIR (and each cache dir it sets) onto a volume, where the file lands with its
uid. Temp files in the container's own layer or a tmpfs would be lost on restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(REPO.glob("compose-examples/*/compose.yaml"))
CACHE_VARS = ("TMPDIR", "XDG_CACHE_HOME", "HF_HOME", "TORCH_HOME")
INIT_SERVICE = "volinit"
OLD_FILE = "old-root-data/state.json"

# Run as the service user inside the service: create a file the way the service would.
WRITE_PROBE = """
import os, sys, tempfile
var = sys.argv[1]
where = None if var == "TMPDIR" else os.environ[var]  # TMPDIR: tempfile's own choice
fd, path = tempfile.mkstemp(prefix="volinit-example-", dir=where)
os.write(fd, b"written by the service user")
os.close(fd)
print(path)
"""

# Run in a throwaway container with the volume mounted: what is really on the volume.
OWNER_OF = "import os, sys; st = os.lstat(sys.argv[1]); print(f'{st.st_uid}:{st.st_gid}')"


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


class Project:
    """One example under a unique compose project name, with the session's images."""

    def __init__(self, compose_file: Path, volinit_image: str, base_image: str) -> None:
        self.file = compose_file
        self.name = f"volinit-ex-{compose_file.parent.name}-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "VOLINIT_IMAGE": volinit_image, "BASE_IMAGE": base_image}
        self.base_image = base_image

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", "-p", self.name, "-f", str(self.file), *args], self.env, timeout)

    def config(self) -> dict:
        out = self.compose("config", "--format", "json")
        assert out.returncode == 0, f"{self.file}: docker compose config failed:\n{out.stderr}"
        return json.loads(out.stdout)

    def container(self, service: str) -> str:
        out = self.compose("ps", "-a", "-q", service)
        ids = out.stdout.split()
        assert len(ids) == 1, f"expected one container for {service}, got {ids!r}: {out.stderr}"
        return ids[0]

    def logs(self) -> str:
        return self.compose("logs", "--no-color").stdout

    def on_volume(self, volume: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run python3 as root in a fresh container with the volume at /v."""
        return run(["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/v",
                    "--entrypoint", "python3", self.base_image, *argv])


def make_old_volume(project: Project, key: str, name: str) -> None:
    """A volume as an earlier, root-running deployment left it: 0:0, with data in it."""
    labels = ["--label", f"com.docker.compose.project={project.name}",
              "--label", f"com.docker.compose.volume={key}"]
    assert run(["docker", "volume", "create", *labels, name]).returncode == 0
    made = project.on_volume(name, "-c", (
        "import os; os.makedirs('/v/old-root-data', exist_ok=True); "
        f"open('/v/{OLD_FILE}', 'w').write('{{}}')"))
    assert made.returncode == 0, made.stderr
    assert project.on_volume(name, "-c", OWNER_OF, "/v").stdout.strip() == "0:0"


def volume_under(mounts: list[dict], path: str) -> tuple[str, str] | None:
    """(volume name, path relative to it) for the named volume mounted deepest above path."""
    best = None
    for m in mounts:
        dest = m["Destination"].rstrip("/") + "/"
        if m.get("Type") == "volume" and path.startswith(dest):
            if best is None or len(dest) > len(best[0]):
                best = (dest, m["Name"])
    return (best[1], path[len(best[0]):]) if best else None


def service_uid(svc: dict) -> str:
    user = str(svc.get("user", ""))
    assert user.split(":")[0].isdigit(), f"long-running services run as a numeric non-root user, got user: {user!r}"
    return user.split(":")[0]


@pytest.fixture(params=["fresh", "old-root-owned"])
def volumes_state(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.docker
@pytest.mark.parametrize("compose_file", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_example_comes_up_and_its_user_writes_on_a_volume(
    compose_file: Path, volumes_state: str, volinit_image: str, base_image: str
) -> None:
    assert (compose_file.parent / "README.md").is_file(), "each example says in a README which incident it prevents"
    project = Project(compose_file, volinit_image, base_image)
    cfg = project.config()
    services = cfg["services"]
    assert INIT_SERVICE in services, f"{compose_file}: no `{INIT_SERVICE}` init service"
    volume_names = {key: vol["name"] for key, vol in (cfg.get("volumes") or {}).items()}
    try:
        if volumes_state == "old-root-owned":
            for key, name in volume_names.items():
                make_old_volume(project, key, name)

        up = project.compose("up", "-d", "--wait", "--build")
        assert up.returncode == 0, f"up --wait failed ({up.returncode}):\n{up.stderr[-3000:]}\n{project.logs()}"

        init = project.container(INIT_SERVICE)
        state = run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", init]).stdout.split()
        assert state == ["exited", "0"], f"init service: {state}\n{project.logs()}"

        workers = {n: s for n, s in services.items() if n != INIT_SERVICE}
        assert workers, "an example has a long-running service for volinit to prepare volumes for"
        for name, svc in workers.items():
            uid = service_uid(svc)
            env = svc.get("environment") or {}
            assert env.get("TMPDIR"), f"{name}: set TMPDIR to a dir on a volume (seed 000, 003)"
            mounts = json.loads(run(["docker", "inspect", "-f", "{{json .Mounts}}", project.container(name)]).stdout)
            for var in (v for v in CACHE_VARS if env.get(v)):
                wrote = project.compose("exec", "-T", name, "python3", "-c", WRITE_PROBE, var)
                assert wrote.returncode == 0, f"{name}: the service user cannot write in {var}={env[var]}:\n{wrote.stderr}"
                path = wrote.stdout.strip().splitlines()[-1]
                assert path.startswith(env[var].rstrip("/") + "/"), f"{name}: {var} write went to {path}"
                where = volume_under(mounts, path)
                assert where, f"{name}: {var}={env[var]} is not on a named volume; its files die with the container"
                volume, rel = where
                owner = project.on_volume(volume, "-c", OWNER_OF, f"/v/{rel}")
                assert owner.returncode == 0, f"{path} is not on volume {volume}: {owner.stderr}"
                assert owner.stdout.strip().split(":")[0] == uid, f"{path} on {volume}: owner {owner.stdout}"

            if volumes_state == "old-root-owned":
                for m in mounts:
                    if m.get("Type") != "volume":
                        continue
                    # the old data, root-owned before, now belongs to the service user
                    old = project.on_volume(m["Name"], "-c", OWNER_OF, f"/v/{OLD_FILE}")
                    assert old.returncode == 0, old.stderr
                    assert old.stdout.strip().split(":")[0] == uid, (
                        f"{m['Name']}: the old root-owned file is still {old.stdout.strip()}\n{project.logs()}")
    finally:
        project.compose("down", "-v", "--rmi", "local", "--remove-orphans")
        for name in volume_names.values():
            run(["docker", "volume", "rm", "-f", name])
