"""`volinit fix` as a user meets it.

Without Docker: the override and spec it renders from a plan (hardened init, depends_on,
escaping, names that do not collide), its atomic writes, the files it refuses to touch.
With Docker (marked): on each seed project under tests/projects/, fix, then check the
project plus the override (clean, statically and dynamically), `up --wait`, and the service
writing its temp file as uid 1000; a second run gives the same bytes; the refusals; and the
user's own files never change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml
from check_support import check_images  # noqa: F401, F811 - a fixture
from helpers import Result, volinit
from hypothesis import given, settings
from hypothesis import strategies as st

from volinit import spec as specmod
from volinit.errors import OperationError, UsageError
from volinit.host import fix
from volinit.host.plan import DirPlan, FixPlan, VolumePlan, WorkloadPlan
from volinit.host.workload import VOLUME, Mount
from volinit.spec import Owner

REPO = Path(__file__).resolve().parent.parent
PROJECTS = REPO / "tests" / "projects"
SCHEMA = json.loads((REPO / "volinit" / "spec.schema.json").read_text())


def sample_plan() -> FixPlan:
    return FixPlan(
        volumes=(VolumePlan("cache", Owner(1000, 1000), dirs=(DirPlan(".tmp", 0o700, "24h"), DirPlan("my dir"))),
                 VolumePlan("volinit-web", Owner(1000, 1000), 0o1777, (DirPlan(".tmp", 0o700, "24h"),), "scratch",
                            ("web",))),
        workloads=(WorkloadPlan("api", (("TMPDIR", "/app/cache/.tmp"),), (), True, ("why",)),
                   WorkloadPlan("web", (("TMPDIR", "/data/$x/.tmp"),), (Mount("/data/$x", VOLUME, "volinit-web"),),
                                True, ("why web",))),
    )


CONFIG = {"name": "p", "services": {"api": {}, "web": {}}, "volumes": {"cache": {"name": "p_cache"}}}


def rendered(tmp_path: Path, config: dict | None = None, plan: FixPlan | None = None) -> fix.Output:
    inputs = [str(tmp_path / "compose.yaml")]
    return fix.render(plan or sample_plan(), config or CONFIG, inputs, str(tmp_path / fix.DEFAULT_OVERRIDE),
                      str(tmp_path / fix.DEFAULT_SPEC))


def test_the_override_adds_one_hardened_init_and_gates_its_writers(tmp_path: Path) -> None:
    out = rendered(tmp_path)
    doc = yaml.safe_load(out.override)
    init = doc["services"]["volinit"]
    assert init["image"] == "${VOLINIT_IMAGE:-ghcr.io/volinit/volinit:0.1}"
    assert (init["read_only"], init["network_mode"], init["cap_drop"]) == (True, "none", ["ALL"])
    assert init["cap_add"] == ["CHOWN", "FOWNER", "DAC_OVERRIDE"]
    assert init["configs"] == [{"source": "volinit-spec", "target": "/etc/volinit/volinit.yaml"}]
    assert doc["configs"] == {"volinit-spec": {"file": "./volinit.yaml"}}  # file:, never content:
    assert [v["target"] for v in init["volumes"]] == ["/volumes/cache", "/volumes/volinit-web"]
    for name in ("api", "web"):
        assert doc["services"][name]["depends_on"] == {"volinit": {"condition": "service_completed_successfully"}}
    assert doc["volumes"] == {"volinit-web": {}}  # only the new one: cache is the user's


def test_a_dollar_in_a_path_is_escaped_from_compose_interpolation(tmp_path: Path) -> None:
    web = yaml.safe_load(rendered(tmp_path).override)["services"]["web"]
    assert web["environment"] == {"TMPDIR": "/data/$$x/.tmp"}
    assert web["volumes"] == [{"type": "volume", "source": "volinit-web", "target": "/data/$$x"}]


def test_the_spec_loads_and_validates_and_names_its_schema(tmp_path: Path) -> None:
    out = rendered(tmp_path)
    assert out.spec.startswith(f"# yaml-language-server: $schema={SCHEMA['$id']}\n")
    loaded = specmod.loads(out.spec)
    assert [(v.path, str(v.owner), v.mode) for v in loaded.volumes] == [
        ("/volumes/cache", "1000:1000", None), ("/volumes/volinit-web", "1000:1000", 0o1777)]
    assert [(d.path, d.mode, d.prune) for d in loaded.volumes[0].dirs] == [(".tmp", 0o700, 86400), ("my dir", None, None)]
    jsonschema.validate(yaml.safe_load(out.spec), SCHEMA)


def test_names_already_taken_in_the_project_are_not_reused(tmp_path: Path) -> None:
    config = {**CONFIG, "services": {**CONFIG["services"], "volinit": {}}, "configs": {"volinit-2-spec": {}}}
    doc = yaml.safe_load(rendered(tmp_path, config).override)
    assert set(doc["services"]) == {"volinit-2", "api", "web"}
    assert doc["services"]["api"]["depends_on"] == {"volinit-2": {"condition": "service_completed_successfully"}}
    assert set(doc["configs"]) == {"volinit-2-spec-2"}


def test_a_new_volume_whose_name_is_taken_is_a_usage_error(tmp_path: Path) -> None:
    config = {**CONFIG, "volumes": {**CONFIG["volumes"], "volinit-web": {}}}
    with pytest.raises(UsageError, match="taken"):
        rendered(tmp_path, config)


def test_rendering_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    assert rendered(tmp_path) == rendered(tmp_path)


@pytest.mark.parametrize("value,why", [("web", "SERVICE=UID"), ("=1000", "SERVICE=UID"), ("web=app", "bad owner"),
                                       ("web=-1", "bad owner")])
def test_bad_owner_flags_are_usage_errors(value: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        fix.parse_owners([value])


def test_owner_flags_parse_and_gid_defaults_to_uid() -> None:
    assert fix.parse_owners(["web=1000", "api=1000:1001"]) == {"web": Owner(1000, 1000), "api": Owner(1000, 1001)}
    with pytest.raises(UsageError, match="twice"):
        fix.parse_owners(["web=1000", "web=1001"])


def test_writes_are_atomic_and_a_failed_second_write_restores_the_first(tmp_path: Path) -> None:
    out = rendered(tmp_path)
    spec_path = Path(out.spec_path)
    spec_path.write_text(f"# {fix.MARK}\nold\n")
    Path(out.override_path).mkdir()  # the override cannot replace a directory
    with pytest.raises(OperationError, match="nothing was changed"):
        fix.write_both(out)
    assert spec_path.read_text() == f"# {fix.MARK}\nold\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [fix.DEFAULT_OVERRIDE, fix.DEFAULT_SPEC]  # no temp left


def test_writes_then_reports_unchanged(tmp_path: Path) -> None:
    out = rendered(tmp_path)
    assert fix.write_both(out) is True
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert fix.write_both(out) is False
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    assert oct(Path(out.spec_path).stat().st_mode & 0o777) == oct(0o644)


def test_output_paths_never_name_an_input_and_never_overwrite_a_file_fix_did_not_write(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text("services: {}\n")
    with pytest.raises(UsageError, match="compose files read"):
        fix._paths([str(compose)], str(compose), None)
    with pytest.raises(UsageError, match="compose files read"):
        fix._paths([str(compose)], None, str(compose))
    override, spec_path = fix._paths([str(compose)], None, None)
    assert (override, spec_path) == (str(tmp_path / "compose.volinit.yaml"), str(tmp_path / "volinit.yaml"))
    (tmp_path / "volinit.yaml").write_text("version: 1  # the user's own\n")
    with pytest.raises(UsageError, match="not written by volinit fix"):
        fix._check_ours("--spec-file", spec_path)
    (tmp_path / "volinit.yaml").write_text(f"# {fix.MARK}\n")
    fix._check_ours("--spec-file", spec_path)


# -- with Docker --------------------------------------------------------------------------------

SEEDS = ["fix-ocr", "fix-web", "fix-reports"]


@pytest.fixture(scope="session")
def service_image(base_image: str) -> str:
    tag = f"volinit-fix-service:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(["docker", "build", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag,
                            str(PROJECTS)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    yield tag
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


class Copy:
    """A seed project copied to a temp dir, under a project name of its own."""

    def __init__(self, src: Path, dest: Path, env: dict[str, str]) -> None:
        shutil.copytree(src, dest)
        self.dir = dest
        self.env = {**os.environ, **env, "COMPOSE_PROJECT_NAME": f"volinit-fix-{uuid.uuid4().hex[:8]}"}
        self.hashes = self.hash()

    def hash(self) -> dict[str, str]:
        return {str(p.relative_to(self.dir)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.dir.rglob("*")) if p.is_file() and p.name not in (fix.DEFAULT_OVERRIDE, fix.DEFAULT_SPEC)}

    def volinit(self, *args: str) -> Result:
        return _in(self.dir, self.env, *args)

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "compose", "-f", "compose.yaml", "-f", fix.DEFAULT_OVERRIDE, *args],
                              cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=300)


def _in(cwd: Path, env: dict[str, str], *args: str) -> Result:
    """volinit run from cwd, as a user in the project's directory would."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return volinit(*args, env=env, timeout=300)
    finally:
        os.chdir(old)


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path, volinit_image: str, service_image: str) -> Iterator[Copy]:
    copy = Copy(PROJECTS / request.param, tmp_path / request.param,
                {"VOLINIT_IMAGE": volinit_image, "FIX_IMAGE": service_image})
    yield copy
    copy.compose("down", "-v", "--remove-orphans")


@pytest.mark.docker
@pytest.mark.parametrize("project", SEEDS, indirect=True)
def test_fix_makes_check_clean_and_the_service_writes_as_uid_1000(project: Copy) -> None:
    before = project.volinit("check", "--static", "-f", "compose.yaml")
    assert before.code == 1, before.err  # the seed is broken as shipped

    res = project.volinit("fix", "-f", "compose.yaml")
    assert res.code == 0, res.err
    assert "docker compose -f compose.yaml -f compose.volinit.yaml up" in res.out
    assert "COMPOSE_FILE=compose.yaml:compose.volinit.yaml docker compose up" in res.out
    written = {n: (project.dir / n).read_bytes() for n in (fix.DEFAULT_OVERRIDE, fix.DEFAULT_SPEC)}
    jsonschema.validate(yaml.safe_load(written[fix.DEFAULT_SPEC]), SCHEMA)

    again = project.volinit("fix", "-f", "compose.yaml")
    assert again.code == 0, again.err
    assert {n: (project.dir / n).read_bytes() for n in written} == written  # byte-identical
    assert "unchanged" in again.err

    for mode in (["--static"], []):
        after = project.volinit("check", *mode, "-f", "compose.yaml", "-f", fix.DEFAULT_OVERRIDE)
        assert after.code == 0, f"check {mode} after fix:\n{after.out}\n{after.err}"

    up = project.compose("up", "-d", "--wait")
    assert up.returncode == 0, up.stderr + project.compose("logs").stdout
    service = yaml.safe_load((project.dir / "compose.yaml").read_text())["services"]
    (name,) = service
    logs = project.compose("logs", "--no-log-prefix", name).stdout
    temp = next(line.split()[1] for line in logs.splitlines() if line.startswith("temp "))
    probe = project.compose("exec", "-T", name, "python3", "-c",
                            "import os, sys, tempfile; st = os.stat(sys.argv[1]); "
                            "print(st.st_uid, st.st_gid, os.getuid(), tempfile.gettempdir())", temp)
    assert probe.returncode == 0, probe.stderr
    uid, gid, runs_as, tempdir = probe.stdout.split()
    assert (uid, gid, runs_as) == ("1000", "1000", "1000")
    assert temp.startswith(tempdir + "/")
    after_up = project.volinit("fix", "-f", "compose.yaml")  # the volumes exist now: same plan
    assert after_up.code == 0 and "unchanged" in after_up.err, after_up.err
    assert {n: (project.dir / n).read_bytes() for n in written} == written
    assert project.hash() == project.hashes  # the user's files never changed


@pytest.mark.docker
@pytest.mark.parametrize("project", ["fix-ocr"], indirect=True)
def test_dry_run_prints_both_files_and_writes_nothing(project: Copy) -> None:
    res = project.volinit("fix", "--dry-run")
    assert res.code == 0, res.err
    assert f"# --- {fix.DEFAULT_OVERRIDE} ---" in res.out and f"# --- {fix.DEFAULT_SPEC} ---" in res.out
    assert "TMPDIR: /app/cache/.tmp" in res.out and "/volumes/ocr-cache:" in res.out
    assert sorted(p.name for p in project.dir.iterdir()) == ["compose.yaml"]


@pytest.mark.docker
@pytest.mark.parametrize("project", ["fix-ocr"], indirect=True)
def test_fix_never_names_an_input_as_output(project: Copy) -> None:
    for args in (["-o", "compose.yaml"], ["--spec-file", "./compose.yaml"]):
        res = project.volinit("fix", "-f", "compose.yaml", *args)
        assert res.code == 2 and "compose files read" in res.err, res.err
    assert sorted(p.name for p in project.dir.iterdir()) == ["compose.yaml"]
    assert project.hash() == project.hashes


REFUSALS = {
    "unknown-uid": ("""
services:
  app:
    image: volinit-fix-absent-image:never-built
    read_only: true
    volumes: [data:/data]
volumes:
  data:
""", "unknown", "--owner app=UID:GID"),
    "two-uids": ("""
services:
  a:
    image: ${FIX_IMAGE}
    user: "1000:1000"
    volumes: [shared:/data]
  b:
    image: ${FIX_IMAGE}
    user: "1001:1001"
    volumes: [shared:/srv/data]
volumes:
  shared:
""", "different uids", "run them as one uid"),
    "read-only-everywhere": ("""
services:
  a:
    image: ${FIX_IMAGE}
    user: "1000:1000"
    environment: {HF_HOME: /models/hf}
    volumes: [models:/models:ro]
volumes:
  models:
""", "read-only in every service", "read-write"),
}


@pytest.mark.docker
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_what_fix_cannot_decide_it_refuses_with_the_way_out(case: str, tmp_path: Path, service_image: str) -> None:
    text, why, way_out = REFUSALS[case]
    (tmp_path / "compose.yaml").write_text(text)
    env = {**os.environ, "FIX_IMAGE": service_image, "COMPOSE_PROJECT_NAME": f"volinit-fix-{uuid.uuid4().hex[:8]}"}
    res = _in(tmp_path, env, "fix")
    assert res.code == 1, res.err
    assert any(why in line and way_out in line for line in res.errors), res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compose.yaml"]  # nothing written


@pytest.mark.docker
def test_owner_flag_settles_an_unknown_uid(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(REFUSALS["unknown-uid"][0])
    env = {**os.environ, "COMPOSE_PROJECT_NAME": f"volinit-fix-{uuid.uuid4().hex[:8]}"}
    res = _in(tmp_path, env, "fix", "--owner", "app=1000:1000")
    assert res.code == 0, res.err
    spec = specmod.load(str(tmp_path / fix.DEFAULT_SPEC))
    assert [(v.path, str(v.owner)) for v in spec.volumes] == [("/volumes/data", "1000:1000")]
    bad = _in(tmp_path, env, "fix", "--owner", "nosuch=1000")
    assert bad.code == 2 and "no such service" in bad.err


@pytest.mark.docker
@pytest.mark.parametrize("seed", ["seed000", "seed002", "seed003", "seed004"])
def test_fix_on_the_check_seed_projects_makes_check_clean(seed: str, tmp_path: Path, base_image: str,
                                                         volinit_image: str, check_images: str) -> None:  # noqa: F811
    """check's own seed projects (their services exit at once, so no `up` here)."""
    src = PROJECTS / "check" / seed
    shutil.copytree(src, tmp_path / seed)
    env = {**os.environ, "BASE_IMAGE": base_image, "VOLINIT_IMAGE": volinit_image, "VCHECK_TAG": check_images,
           "COMPOSE_PROJECT_NAME": f"volinit-fix-{uuid.uuid4().hex[:8]}"}
    cwd = tmp_path / seed
    res = _in(cwd, env, "fix")
    assert res.code == 0, res.err
    for mode in (["--static"], []):
        after = _in(cwd, env, "check", *mode, "-f", "compose.yaml", "-f", fix.DEFAULT_OVERRIDE)
        assert after.code == 0, f"{seed} check {mode} after fix:\n{after.out}\n{after.err}"
    assert (cwd / "compose.yaml").read_bytes() == (src / "compose.yaml").read_bytes()


EXAMPLES = sorted(p.parent.name for p in (REPO / "compose-examples").glob("*/compose.yaml"))


def strip_volinit(doc: dict) -> dict:
    """The example as it was before volinit: no init service, no gate, no spec config."""
    doc["services"].pop("volinit")
    for svc in doc["services"].values():
        deps = svc.get("depends_on") or {}
        deps.pop("volinit", None)
        if not deps:
            svc.pop("depends_on", None)
    doc.get("configs", {}).pop("volinit-spec", None)
    if not doc.get("configs"):
        doc.pop("configs", None)
    return doc


@pytest.mark.docker
@pytest.mark.parametrize("example", EXAMPLES)
def test_an_example_without_its_volinit_parts_is_fixed_and_comes_up(example: str, tmp_path: Path, base_image: str,
                                                                     volinit_image: str) -> None:
    copy = Copy(REPO / "compose-examples" / example, tmp_path / example,
                {"BASE_IMAGE": base_image, "VOLINIT_IMAGE": volinit_image})
    dest, env = copy.dir, copy.env
    try:
        shipped = _in(dest, env, "fix")
        assert shipped.code == 0 and "nothing to fix" in shipped.err, shipped.err  # clean as shipped

        doc = strip_volinit(yaml.safe_load((dest / "compose.yaml").read_text()))
        (dest / "compose.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        build = subprocess.run(["docker", "compose", "build", "-q"], cwd=dest, env=env, capture_output=True,
                               text=True, timeout=600)
        assert build.returncode == 0, build.stderr
        refused = _in(dest, env, "fix")  # the example's own volinit.yaml is the user's
        assert refused.code == 2 and "not written by volinit fix" in refused.err, refused.err
        (dest / "volinit.yaml").unlink()
        copy.hashes = copy.hash()

        res = _in(dest, env, "fix")
        assert res.code == 0, res.err
        for mode in (["--static"], []):
            after = _in(dest, env, "check", *mode, "-f", "compose.yaml", "-f", fix.DEFAULT_OVERRIDE)
            assert after.code == 0, f"check {mode} after fix:\n{after.out}\n{after.err}"
        up = copy.compose("up", "-d", "--wait")
        assert up.returncode == 0, up.stderr + copy.compose("logs").stdout
        (name,) = [s for s in doc["services"]]
        probe = copy.compose("exec", "-T", name, "python3", "-c",
                             "import os, tempfile; fd, p = tempfile.mkstemp(); st = os.fstat(fd); "
                             "print(st.st_uid, st.st_gid, p)")
        assert probe.returncode == 0, probe.stderr
        uid, gid, path = probe.stdout.split()
        assert (uid, gid) == ("1000", "1000")
        assert not path.startswith("/tmp/") or example == "non-root-web", path
        assert copy.hash() == copy.hashes
    finally:
        copy.compose("down", "-v", "--remove-orphans", "--rmi", "local")


@settings(max_examples=200, deadline=None)
@given(names=st.lists(st.text(alphabet="ab.-_ :#'\"{}[],&*!|>%@`~?\\\n\t\u00e9", min_size=1, max_size=10),
                      min_size=1, max_size=4))
def test_any_dir_name_the_plan_holds_reaches_the_spec_as_itself(names: list[str]) -> None:
    rels = []
    for name in names:
        try:
            rel = specmod.parse_rel_dir(name, "k")
        except specmod.SpecError:
            continue
        if rel not in rels:
            rels.append(rel)
    plan = FixPlan(volumes=(VolumePlan("v", Owner(1000, 1000), dirs=tuple(DirPlan(r) for r in rels)),))
    loaded = specmod.loads(fix.render_spec(plan, {"v": "v"}, "compose.volinit.yaml"))
    assert [d.path for d in loaded.volumes[0].dirs] == rels
