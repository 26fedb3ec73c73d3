"""The compose examples as shipped are clean, statically and by probe; with their volinit
parts taken out (the init service, its gate and the TMPDIR it made possible) they are not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from check_support import REPO, check, docker, project_env, remove_volumes

pytestmark = pytest.mark.docker

EXAMPLES = sorted(REPO.glob("compose-examples/*/compose.yaml"))
# what each example would die of without volinit
BROKEN = {
    "non-root-web": {("volume-not-owned", "web")},  # tempfile falls back to the cwd, on that volume
    "ocr-service": {("volume-not-owned", "ocr-service")},
    "template-cache": {("volume-not-owned", "reports")},
}


@pytest.fixture(scope="module")
def built(base_image: str, volinit_image: str):
    """Each example's images, built under its own project name; removed afterwards."""
    made = {}
    try:
        for f in EXAMPLES:
            env = project_env(base_image, volinit_image, f.parent.name)
            out = docker("compose", "-f", str(f), "build", "-q", env=env)
            assert out.returncode == 0, out.stderr
            made[f.parent.name] = env
        yield made
    finally:
        for env in made.values():
            docker("compose", "-f", "/dev/null", "down", env=env)  # nothing runs; images go below
            images = docker("images", "-q", "--filter", f"reference={env['COMPOSE_PROJECT_NAME']}-*").stdout.split()
            if images:
                docker("rmi", "-f", *images)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("mode", [["--static"], []], ids=["static", "dynamic"])
def test_shipped_example_is_clean(example: Path, mode: list[str], built, leftovers_checked) -> None:
    env = built[example.parent.name]
    run = check("--json", *mode, cwd=example.parent, env=env)
    assert run.code == 0, (run.out, run.err)
    assert run.doc["ok"] is True and run.doc["findings"] == []
    services = {s["name"]: s for s in run.doc["services"]}
    assert services["volinit"]["init"] is True
    if not mode:
        assert all(s["probed"] for s in services.values() if not s["init"]), services


def without_volinit(example: Path, env: dict[str, str], dest: Path) -> Path:
    """The example as it was before volinit: compose's own rendering, minus the init service,
    the depends_on on it, and the env vars that pointed into the init's volumes."""
    out = subprocess.run(["docker", "compose", "-f", str(example), "config"], capture_output=True, text=True,
                         env={**__import__("os").environ, **env}, check=True)
    doc = yaml.safe_load(out.stdout)
    doc["services"].pop("volinit")
    for svc in doc["services"].values():
        (svc.get("depends_on") or {}).pop("volinit", None)
        if not svc.get("depends_on"):
            svc.pop("depends_on", None)
        for var in ("TMPDIR", "VOLINIT_PRUNE"):
            (svc.get("environment") or {}).pop(var, None)
        svc.pop("healthcheck", None)
    doc["configs"].pop("volinit-spec", None)
    path = dest / "compose.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("mode", [["--static"], []], ids=["static", "dynamic"])
def test_example_without_volinit_is_not_clean(example: Path, mode: list[str], built, tmp_path: Path,
                                              leftovers_checked) -> None:
    env = built[example.parent.name]
    variant = without_volinit(example, env, tmp_path)
    try:
        run = check("--json", *mode, "-f", str(variant), env=env)
    finally:
        remove_volumes(env["COMPOSE_PROJECT_NAME"])
    assert run.code == 1, (run.out, run.err)
    got = {(f["id"], f["service"]) for f in run.doc["findings"]}
    assert BROKEN[example.parent.name] <= got, run.doc["findings"]
