"""Real compose files from public projects (tests/projects/check/corpus, verbatim from
/work/shared/compose-corpus, INDEX.md there gives the evidence): what each must report, what
it may, and nothing else. The images cannot be pulled here, so stand-ins with the same USER,
dirs, ENV and VOLUMEs are built and tagged with the files' image names."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from check_support import (
    PROJECTS,
    check,
    docker,
    make_volume,
    project_env,
    remove_volumes,
)

pytestmark = pytest.mark.docker

CORPUS = PROJECTS / "corpus"

# file -> (required rule ids, acceptable rule ids); anything else is a false positive
EXPECT = {
    "01-filecodebox-nonroot-upgrade.yaml": ({"volume-not-owned"}, set()),
    "02-agenc-readonly-no-tmp.yaml": ({"no-temp-dir"}, set()),
    # required "with caveats" in INDEX.md: root, an unsized tmpfs and a hard-coded CLI tmp path;
    # the temp-too-small rule keys on a sized tmpfs and TMPDIR/tempfile, so it is not reported
    "04-mmseqs2-app-tmpfs-db-download.yaml": (set(), {"temp-too-small"}),
    "05-synthorg-data-init-chown.yaml": (set(), {"cache-unwritable"}),  # 2 uncertain in INDEX.md
    "07-libretranslate-bind-puid-placebo.yaml": (set(), set()),
    "10-voicebox-hf-cache-volume-root.yaml": ({"volume-not-owned"}, {"cache-unwritable"}),
    "11-private-gpt-home-nonexistent.yaml": ({"cache-unwritable"}, set()),
    "12-fakecam-readonly-root-no-tmp.yaml": ({"no-temp-dir"}, {"cache-unwritable"}),
}

# Stand-ins: the USER, dirs, ENV and VOLUMEs INDEX.md cites from each project's Dockerfile.
# "{project}" is the compose project name (images compose builds are named <project>-<service>).
STAND_INS = {
    "01": {"lanol/filecodebox:2.5.3": """
RUN useradd --system --uid 1000 --user-group -m -d /home/appuser appuser \\
    && mkdir -p /app/data && chown -R appuser:appuser /app
WORKDIR /app
USER appuser"""},
    "02": {"agenc:local": """
RUN groupadd -g 10001 agenc && useradd --no-log-init --create-home --uid 10001 --gid 10001 agenc \\
    && mkdir -p /data /opt/agenc && chown agenc:agenc /data && chmod 0700 /data
ENV HOME=/home/agenc XDG_CACHE_HOME=/data/.cache AGENC_HOME=/data/.agenc
WORKDIR /opt/agenc
USER 10001:10001"""},
    "04": {"ghcr.io/soedinglab/mmseqs2-app-backend:vcheck": "WORKDIR /opt/mmseqs-web",
           "ghcr.io/soedinglab/mmseqs2-app-frontend:vcheck": "RUN mkdir -p /etc/nginx/conf.d",
           "redis:alpine": "RUN mkdir /data\nVOLUME /data\nWORKDIR /data"},
    "05": {"{project}-backend": """
RUN useradd -u 65532 -m -d /home/nonroot nonroot && mkdir -p /data && chown 65532:65532 /data
USER 65532""",
           "ghcr.io/aureliolo/synthorg-web:latest": """
RUN useradd -u 65532 -m -d /home/nonroot nonroot
USER 65532"""},
    "07": {"libretranslate/libretranslate:latest": """
RUN useradd --system -m -d /home/libretranslate -u 1032 libretranslate && mkdir -p /app
WORKDIR /app
USER libretranslate"""},
    "10": {"{project}-voicebox": """
RUN useradd -r -m -s /bin/bash voicebox && mkdir -p /app/data && chown -R voicebox:voicebox /app
WORKDIR /app
USER voicebox"""},
    "11": {"{project}-private-gpt": """
RUN useradd --system -d /nonexistent -M worker \\
    && mkdir -p /home/worker/app/local_data && chown worker /home/worker/app/local_data
WORKDIR /home/worker/app
USER worker""",
           "ollama/ollama:latest": "RUN mkdir -p /root/.ollama"},
    "12": {"fakecam": "WORKDIR /src"},
}


def file_env(name: str, tmp: Path) -> dict[str, str]:
    """The interpolation variables each file needs, pointing at paths under tmp that do not
    exist: check must not create them."""
    return {
        "AGENC_DOCKER_CONTEXT": str(tmp), "AGENC_BUILD_COMMIT": "0" * 40, "SOURCE_DATE_EPOCH": "0",
        "AGENC_BUILD_TIME": "1970-01-01T00:00:00Z", "AGENC_VERSION": "0.0.0",
        "REPO_OWNER": "soedinglab", "APP": "mmseqs2", "TAG": "vcheck", "DB_PATH": str(tmp / "db"),
        "JOBS_PATH": str(tmp / "jobs"), "THREADS_PER_WORKER": "1", "PORT": "8080",
        "POSTGRES_PASSWORD": "x",
        "libretranslate_data_folder": str(tmp / "lt"),
        "IMAGE_BACKGROUND": str(tmp / "bg.jpg"), "IMAGE_FOREGROUND": str(tmp / "fg.jpg"),
        "IMAGE_FOREGROUND_MASK": str(tmp / "mask.png"), "VIDEO_INPUT": "/dev/video0", "VIDEO_OUTPUT": "/dev/video2",
    }


@pytest.fixture(scope="module")
def stand_ins(base_image: str, volinit_image: str, tmp_path_factory: pytest.TempPathFactory):
    """Per file: a project dir holding the file, its env, and its stand-in images built."""
    made: list[str] = []
    out = {}
    try:
        for name in EXPECT:
            key = name[:2]
            tmp = tmp_path_factory.mktemp(f"corpus{key}")
            proj = tmp / "project"
            proj.mkdir()
            shutil.copy(CORPUS / name, proj / "compose.yaml")
            (proj / ".env").write_text("")  # 05 names an env_file .env; empty is enough
            env = {**project_env(base_image, volinit_image, f"c{key}"), **file_env(name, tmp)}
            for tag, body in STAND_INS[key].items():
                tag = tag.format(project=env["COMPOSE_PROJECT_NAME"])
                build = docker("build", "-q", "-t", tag, "-", input_text=f"FROM {base_image}\n{body}\n")
                assert build.returncode == 0, build.stderr
                made.append(tag)
            out[name] = (proj, env, tmp)
        yield out
    finally:
        if made:
            docker("rmi", "-f", *made)


@pytest.mark.parametrize("name", sorted(EXPECT))
@pytest.mark.parametrize("mode", [["--static"], []], ids=["static", "dynamic"])
def test_corpus_file(name: str, mode: list[str], stand_ins, base_image: str, leftovers_checked) -> None:
    proj, env, tmp = stand_ins[name]
    required, acceptable = EXPECT[name]
    project = env["COMPOSE_PROJECT_NAME"]
    before = sorted(p.name for p in tmp.iterdir())
    try:
        if name.startswith("01"):
            # the upgrade path INDEX.md describes: a volume the root-running 2.5.2 wrote
            make_volume(project, "fcb-data", base_image)
        profiles = ["--profile", "setup"] if name.startswith("04") else []
        run = check("--json", *mode, *profiles, cwd=proj, env=env)
    finally:
        remove_volumes(project)
    assert run.code in (0, 1), run.err
    got = {f["id"] for f in run.doc["findings"]}
    assert required <= got, (run.doc["findings"], run.err)
    assert got <= required | acceptable, run.doc["findings"]
    assert run.code == (1 if got else 0)
    if mode == []:
        probed = [s["name"] for s in run.doc["services"] if s["probed"]]
        assert probed, run.doc["services"]
    # no bind source, data folder or file was made on the host
    assert sorted(p.name for p in tmp.iterdir()) == before


def test_fresh_volume_for_an_image_that_owns_its_dir_is_not_flagged(stand_ins, leftovers_checked) -> None:
    proj, env, _ = stand_ins["01-filecodebox-nonroot-upgrade.yaml"]
    run = check("--json", cwd=proj, env=env)
    assert run.code == 0, run.doc
    notes = [n for s in run.doc["services"] for n in s["notes"]]
    assert any("not created yet" in n and "owned 1000:" in n for n in notes), notes
    assert docker("volume", "ls", "-q", "--filter", f"name={env['COMPOSE_PROJECT_NAME']}").stdout.strip() == ""


def test_image_facts_resolve_names_and_homes(stand_ins) -> None:
    proj, env, _ = stand_ins["11-private-gpt-home-nonexistent.yaml"]
    run = check("--json", "--static", cwd=proj, env=env)
    svc = {s["name"]: s for s in run.doc["services"]}
    assert svc["private-gpt"]["user"] is not None and svc["private-gpt"]["user"] != "0:0"
    assert svc["ollama"]["user"] == "0:0"
    (f,) = run.doc["findings"]
    assert f["path"] == "/nonexistent/.cache" and "XDG_CACHE_HOME" in f["fix"]
    assert os.path.basename(f["service"]) == "private-gpt"
