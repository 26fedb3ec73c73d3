"""`volinit check` as a user meets it: compose's own reading of a project, errors in one line,
a shell-less image probed, and a dynamic check that changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from check_support import (
    PROJECTS,
    check,
    docker,
    project_env,
    remove_volumes,
)

DEAD = "unix:///nonexistent/volinit-check.sock"


def one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volinit: error: "), err
    return lines[0]


def test_help_has_an_example() -> None:
    run = check("--help")
    assert run.code == 0 and "Example:" in run.out and "--static" in run.out


@pytest.mark.parametrize("args, word", [
    (["--min-temp", "lots"], "--min-temp"),
    (["--persist", "api"], "--persist"),
    (["--persist", "api:relative"], "--persist"),
])
def test_bad_flags_are_usage_errors(args: list[str], word: str) -> None:
    run = check("--static", *args, cwd=PROJECTS / "multi")
    assert run.code == 2 and word in one_error(run.err)


@pytest.mark.docker
def test_compose_rejecting_the_project_is_exit_2_with_its_message(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n    read_only: sometimes\n")
    run = check("--static", cwd=tmp_path)
    line = one_error(run.err)
    assert run.code == 2 and "compose rejected the project" in line and "read_only" in line
    run = check("--static", "-f", str(tmp_path / "missing.yaml"))
    assert run.code == 2 and "missing.yaml" in one_error(run.err)


@pytest.mark.docker
def test_unknown_service_is_a_usage_error() -> None:
    run = check("--static", "--service", "nope", cwd=PROJECTS / "multi")
    assert run.code == 2 and "nope" in one_error(run.err) and "api" in run.err


@pytest.mark.docker
def test_no_engine_in_dynamic_mode_names_static() -> None:
    run = check(cwd=PROJECTS / "seed000", env={"DOCKER_HOST": DEAD})
    line = one_error(run.err)
    assert run.code == 2 and "--static" in line and "nonexistent/volinit-check.sock" in line


@pytest.mark.docker
def test_static_mode_runs_without_an_engine() -> None:
    run = check("--static", "--json", cwd=PROJECTS / "seed000", env={"DOCKER_HOST": DEAD, "BASE_IMAGE": "x"})
    assert run.code == 1
    # no image facts, but read_only and no /tmp is visible in the compose file alone
    assert run.found() == {("no-temp-dir", "web", "/tmp")}
    assert "no Docker engine" in run.doc["services"][0]["notes"][0]


@pytest.mark.docker
def test_missing_volinit_image_names_static(base_image: str) -> None:
    env = {"BASE_IMAGE": base_image, "VOLINIT_IMAGE": "vcheck-no-such-image:none"}
    run = check(cwd=PROJECTS / "multi", env=env)
    line = one_error(run.err)
    assert run.code == 2 and "vcheck-no-such-image:none" in line and "--static" in line


@pytest.mark.docker
def test_two_files_a_profile_and_dot_env_are_read_as_compose_reads_them(base_image: str) -> None:
    d = PROJECTS / "multi"
    env = {"BASE_IMAGE": base_image, "COMPOSE_PROJECT_NAME": "vcheck-multi"}
    base = check("--static", "--json", cwd=d, env=env)
    assert base.code == 0 and [s["name"] for s in base.doc["services"]] == ["api"]
    assert base.doc["services"][0]["user"] == "1000:1000"  # APP_UID from .env
    both = ["-f", "compose.yaml", "-f", "compose.prod.yaml"]
    prod = check("--static", "--json", *both, cwd=d, env=env)
    assert prod.found() == {("no-temp-dir", "api", "/tmp")}  # read_only comes from the override
    gpu = check("--static", "--json", *both, "--profile", "gpu", cwd=d, env=env)
    assert {s["name"] for s in gpu.doc["services"]} == {"api", "gpu-worker"}
    found = {f["id"]: f for f in gpu.doc["findings"] if f["service"] == "gpu-worker"}
    assert "256M" in found["temp-too-small"]["message"]  # WORKER_TMP from .env
    assert "volume-not-owned" in found
    only = check("--static", "--json", *both, "--profile", "gpu", "--service", "gpu-worker", cwd=d, env=env)
    assert {s["name"] for s in only.doc["services"]} == {"gpu-worker"}


@pytest.mark.docker
def test_reader_keeps_files_in_order_and_x_fields(base_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from volinit.host.compose import load_project

    monkeypatch.setenv("BASE_IMAGE", base_image)
    monkeypatch.chdir(PROJECTS / "multi")
    p = load_project(["compose.yaml", "compose.prod.yaml"], None, ["gpu"], [])
    assert p.files == (str(PROJECTS / "multi" / "compose.yaml"), str(PROJECTS / "multi" / "compose.prod.yaml"))
    assert set(p.config["services"]) == {"api", "gpu-worker"}
    monkeypatch.chdir(PROJECTS / "seed004")
    p = load_project([], None, [], [])
    assert p.files == (str(PROJECTS / "seed004" / "compose.yaml"),)
    assert p.workloads[0].persist == ("/tmp/final_episodes",)
    assert p.config["services"]["api"]["x-volinit"] == {"persist": ["/tmp/final_episodes"]}


@pytest.mark.docker
def test_shell_less_image_is_probed(base_image: str, volinit_image: str, check_images: str,
                                    leftovers_checked) -> None:
    image = f"vcheck-shellless:{check_images}"
    assert docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", "true").returncode != 0  # really no shell
    env = project_env(base_image, volinit_image, "shellless")
    run = check("--json", cwd=PROJECTS / "shellless", env=env)
    assert run.code == 1, run.err
    svc = {s["name"]: s for s in run.doc["services"]}
    assert svc["static-app"]["probed"] and svc["static-app-ok"]["probed"]
    assert svc["static-app"]["user"] == "1000:1000"  # "app" resolved in the image's own /etc/passwd
    assert run.found("dynamic") == {("no-temp-dir", "static-app", "/tmp")}
    assert {f["service"] for f in run.doc["findings"]} == {"static-app"}


@pytest.mark.docker
def test_dynamic_check_changes_nothing(base_image: str, volinit_image: str, check_images: str, tmp_path: Path,
                                       leftovers_checked) -> None:
    """A missing named volume is not created, a missing bind source is not created, an existing
    bind dir is left as it was, and no container remains."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "data.txt").write_text("keep")
    missing = tmp_path / "missing-src"
    (tmp_path / "compose.yaml").write_text(f"""
services:
  app:
    image: vcheck-seed003:{check_images}
    read_only: true
    tmpfs: [/tmp]
    environment:
      XDG_CACHE_HOME: /srv/existing/.cache
    volumes:
      - never-made:/app/cache
      - {missing}:/srv/missing
      - {existing}:/srv/existing
volumes:
  never-made:
""")
    env = project_env(base_image, volinit_image, "nochange")

    image = f"vcheck-seed003:{check_images}"
    project = env["COMPOSE_PROJECT_NAME"]

    def world() -> tuple[str, str, str, list[tuple[str, int, float]]]:
        # the engine is shared with other work: only what this project or its image could touch
        return (docker("volume", "ls", "-q", "--filter", f"name={project}").stdout,
                docker("volume", "ls", "-q", "--filter", "name=never-made").stdout,
                docker("ps", "-a", "-q", "--filter", f"ancestor={image}").stdout,
                sorted((str(p), p.stat().st_mode, p.stat().st_mtime) for p in tmp_path.rglob("*")))

    before = world()
    try:
        run = check("--json", cwd=tmp_path, env=env)
    finally:
        remove_volumes(env["COMPOSE_PROJECT_NAME"])
    assert run.code in (0, 1), run.err
    assert run.doc["services"][0]["probed"]
    after = world()
    assert after == before
    assert not missing.exists()
    notes = " ".join(run.doc["services"][0]["notes"])
    assert "never-made is not created yet" in notes and f"bind source {missing} does not exist" in notes
    # the existing bind dir is root's 0755 here: the probe proved uid 1000 cannot make its cache there
    assert ("cache-unwritable", "app", "/srv/existing/.cache") in run.found("dynamic")
    assert os.listdir(existing) == ["data.txt"]
