"""Each seed incident as a broken compose project: check names it, with its fix, statically
and by probing a throwaway copy of the service's container."""

from __future__ import annotations

import pytest
from check_support import (
    PROJECTS,
    check,
    make_volume,
    project_env,
    remove_volumes,
)

pytestmark = pytest.mark.docker

MODES = [pytest.param(["--static"], "static", id="static"), pytest.param([], "dynamic", id="dynamic")]


def run_seed(name: str, mode: list[str], base_image: str, volinit_image: str, *args: str,
             before=None):
    env = project_env(base_image, volinit_image, name)
    try:
        if before is not None:
            before(env["COMPOSE_PROJECT_NAME"])
        return check("--json", *mode, *args, cwd=PROJECTS / name, env=env)
    finally:
        remove_volumes(env["COMPOSE_PROJECT_NAME"])


def assert_finding(run, rule: str, service: str, path: str, source: str, fix_word: str) -> dict:
    assert run.code == 1, run.err
    hits = [f for f in run.doc["findings"] if (f["id"], f["service"], f["path"]) == (rule, service, path)]
    assert hits, f"no {rule} for {service} {path}: {run.doc['findings']}"
    f = hits[0]
    assert f["source"] == source, f
    assert fix_word in f["fix"], f
    assert "\n" not in f["message"] + f["fix"]
    return f


@pytest.mark.parametrize("mode, source", MODES)
def test_seed_000_read_only_without_tmp(mode, source, base_image, volinit_image, check_images,
                                        leftovers_checked) -> None:
    run = run_seed("seed000", mode, base_image, volinit_image)
    f = assert_finding(run, "no-temp-dir", "web", "/tmp", source, "tmpfs")
    if source == "dynamic":
        assert "uid 1000:1000" in f["message"] and "EROFS" in f["message"]


@pytest.mark.parametrize("mode, source", MODES)
def test_seed_002_cache_in_a_read_only_package_dir(mode, source, base_image, volinit_image, check_images,
                                                   leftovers_checked) -> None:
    run = run_seed("seed002", mode, base_image, volinit_image)
    assert_finding(run, "cache-unwritable", "reports", "/usr/local/lib/app/reportgen/.cache", source,
                   "XDG_CACHE_HOME")
    assert {f["id"] for f in run.doc["findings"]} == {"cache-unwritable"}  # /tmp is a tmpfs: no no-temp-dir


@pytest.mark.parametrize("mode, source", MODES)
def test_seed_003_small_tmp_and_old_root_volumes(mode, source, base_image, volinit_image, check_images,
                                                 leftovers_checked) -> None:
    def old_volumes(project: str) -> None:
        make_volume(project, "ocr-cache", base_image)
        make_volume(project, "ocr-models", base_image)

    run = run_seed("seed003", mode, base_image, volinit_image, before=old_volumes)
    f = assert_finding(run, "temp-too-small", "ocr-service", "/tmp", source, "TMPDIR")
    assert "512" in f["message"]
    for path in ("/app/cache", "/app/models"):
        v = assert_finding(run, "volume-not-owned", "ocr-service", path, source, "volinit repair")
        if source == "dynamic":
            assert "root is 0:0" in v["message"]
        else:
            assert "already exists" in v["message"]


def test_seed_003_fresh_volumes_are_fine_for_an_image_that_owns_the_dirs(base_image, volinit_image, check_images,
                                                                         leftovers_checked) -> None:
    run = run_seed("seed003", [], base_image, volinit_image)
    assert not [f for f in run.doc["findings"] if f["id"] == "volume-not-owned"], run.doc["findings"]
    notes = " ".join(s for svc in run.doc["services"] for s in svc["notes"])
    assert "not created yet" in notes and "owned 1000:1000" in notes


@pytest.mark.parametrize("mode, source", MODES)
def test_seed_004_state_on_tmpfs(mode, source, base_image, volinit_image, check_images, leftovers_checked) -> None:
    run = run_seed("seed004", mode, base_image, volinit_image, "--persist", "api:/app/state")
    assert_finding(run, "state-not-persistent", "api", "/tmp/final_episodes", source, "named volume")
    f = assert_finding(run, "state-not-persistent", "api", "/app/state", source, "named volume")
    assert ("own layer" in f["message"]) if source == "static" else ("overlay" in f["message"])


def test_seed_004_without_persist_paths_is_clean(base_image, volinit_image, check_images) -> None:
    env = project_env(base_image, volinit_image, "seed004")
    run = check("--json", "--static", "-f", str(PROJECTS / "seed004" / "compose.yaml"),
                "--service", "api", env=env)
    # the file's own x-volinit still names /tmp/final_episodes
    assert {(f["id"], f["path"]) for f in run.doc["findings"]} == {("state-not-persistent", "/tmp/final_episodes")}


def test_terminal_free_output_is_one_plain_line_per_finding(base_image, volinit_image, check_images) -> None:
    env = project_env(base_image, volinit_image, "seed000")
    run = check("--static", cwd=PROJECTS / "seed000", env=env)
    assert run.code == 1
    lines = run.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("no-temp-dir web /tmp [static]: ") and "(fix: " in lines[0]
    assert "1 finding in 1 of 1 service" in run.err
