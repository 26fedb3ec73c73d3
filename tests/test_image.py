"""The volinit image in real containers: what an init container does to a volume, and what
the non-root, read-only service that comes after it can then do.

Every init run is hardened as the compose examples run it (read-only root, no network,
cap_drop ALL plus CHOWN, FOWNER, DAC_OVERRIDE) unless a row says otherwise. Ownership is
read back from the volume by a separate container, and "usable" means a uid-1000
`--read-only` container really created a file through TMPDIR on it.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parent.parent

SPEC_PATH = "/etc/volinit/volinit.yaml"
HARDENED: dict[str, Any] = {
    "read_only": True,
    "network_mode": "none",
    "cap_drop": ["ALL"],
    "cap_add": ["CHOWN", "FOWNER", "DAC_OVERRIDE"],
    "security_opt": ["no-new-privileges"],
}
SPEC = """\
version: 1
owner: "{owner}"
volumes:
  /app/cache:
    dirs:
      .tmp:
        mode: "0700"
        prune: 24h
"""

# Old data as a root container left it (seed 003's volumes, created 0:0 before uid 1000).
OLD_ROOT_DATA = """
import os
os.makedirs("/v/datalab/models", exist_ok=True)
open("/v/datalab/models/model.bin", "w").write("weights")
open("/v/state.json", "w").write("{}")
"""
# A dir that another uid kept private: root needs CAP_DAC_OVERRIDE to walk into it.
PRIVATE_DIR = """
import os
os.makedirs("/v/private", exist_ok=True)
open("/v/private/secret", "w").write("x")
for p in ("/v/private/secret", "/v/private"):
    os.chown(p, 999, 999)
os.chmod("/v/private", 0o700)
"""
# What the service does: a file through tempfile, which honours TMPDIR.
SERVICE_WRITE = "import tempfile; fd, path = tempfile.mkstemp(prefix='service-'); print(path)"
OWNERS = "import json, os, sys; print(json.dumps({p: '%d:%d' % (os.lstat(p).st_uid, os.lstat(p).st_gid) for p in sys.argv[1:]}))"


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float


def one_shot(image: str, command: list[str], volumes: list[tuple[str, str, str]] = (), **kwargs: Any) -> Run:
    """Run a container to its exit (its exit code, not a log line, says how it went) and remove it."""
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image, command=command, volumes=list(volumes), **kwargs)
    start = time.monotonic()
    container.start()
    try:
        code = container.get_wrapped_container().wait(timeout=180)["StatusCode"]
        seconds = time.monotonic() - start
        out, err = container.get_logs()
    finally:
        container.stop()
    return Run(code, out.decode(), err.decode(), seconds)


@pytest.fixture
def new_volume() -> Iterator[Any]:
    """A factory for named volumes, all removed after the test."""
    import docker

    client = docker.from_env()
    made: list[str] = []

    def make() -> str:
        name = f"volinit-test-{uuid.uuid4().hex[:10]}"
        client.volumes.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    client.close()


@pytest.fixture
def write_spec(tmp_path: Path) -> Any:
    def write(text: str, name: str = "volinit.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o644)
        return str(path)

    return write


def as_root(base_image: str, volume: str, script: str) -> None:
    run = one_shot(base_image, ["python3", "-c", script], [(volume, "/v", "rw")], network_mode="none")
    assert run.code == 0, run.err


def owners(base_image: str, volume: str, *paths: str) -> dict[str, str]:
    """uid:gid of each path (relative to the volume; "" is its root), as stored on the volume."""
    full = [f"/v/{p}".rstrip("/") for p in paths]
    run = one_shot(base_image, ["python3", "-c", OWNERS, *full], [(volume, "/v", "ro")], network_mode="none")
    assert run.code == 0, run.err
    found = json.loads(run.out)
    return {p: found[f] for p, f in zip(paths, full)}


def init(image: str, volume: str, spec_file: str | None, *, mode: str = "rw", command: list[str] | None = None,
         mounts: list[tuple[str, str, str]] | None = None, **flags: Any) -> Run:
    """The init container: the volume at /app/cache, the spec file mounted where volinit looks."""
    if mounts is None:
        mounts = [(volume, "/app/cache", mode)]
        if spec_file:
            mounts.append((spec_file, SPEC_PATH, "ro"))
    return one_shot(image, command or ["apply"], mounts, **{**HARDENED, **flags})


def service_writes(base_image: str, volume: str, user: str) -> Run:
    """The service: non-root, read-only root, no capabilities, TMPDIR on the volume."""
    return one_shot(base_image, ["python3", "-c", SERVICE_WRITE], [(volume, "/app/cache", "rw")],
                    user=user, env={"TMPDIR": "/app/cache/.tmp"}, **{**HARDENED, "cap_add": []})


@pytest.mark.parametrize(
    ("owner", "service_user", "expect", "prefill", "checked"),
    [
        pytest.param("1000:1000", "1000:1000", "1000:1000", OLD_ROOT_DATA,
                     ["datalab", "datalab/models/model.bin", "state.json"], id="old-root-owned-volume"),
        pytest.param("1000", "1000:1000", "1000:1000", OLD_ROOT_DATA, ["state.json"], id="uid-only-gid-follows"),
        pytest.param("1000:2000", "1000:2000", "1000:2000", OLD_ROOT_DATA, ["state.json"], id="uid-and-gid"),
        pytest.param("1000:1000", "1000:1000", "1000:1000", None, [], id="fresh-empty-volume"),
        pytest.param("1000:1000", "1000:1000", "1000:1000", PRIVATE_DIR,
                     ["private", "private/secret"], id="private-dir-of-another-uid"),
    ],
)
def test_init_makes_volume_usable_by_read_only_non_root_service(
    volinit_image: str, base_image: str, new_volume: Any, write_spec: Any,
    owner: str, service_user: str, expect: str, prefill: str | None, checked: list[str],
) -> None:
    volume = new_volume()
    if prefill:
        as_root(base_image, volume, prefill)
        # the incident: before the init, the service cannot write there at all
        before = service_writes(base_image, volume, service_user)
        assert before.code != 0, f"the service could already write: {before.out}"

    run = init(volinit_image, volume, write_spec(SPEC.format(owner=owner)))
    assert run.code == 0, run.err
    assert "/app/cache: owner " + expect in run.err

    on_disk = owners(base_image, volume, "", ".tmp", *checked)
    assert on_disk == {p: expect for p in ["", ".tmp", *checked]}

    wrote = service_writes(base_image, volume, service_user)
    assert wrote.code == 0, wrote.err
    path = wrote.out.strip()
    assert path.startswith("/app/cache/.tmp/service-")
    assert owners(base_image, volume, path.removeprefix("/app/cache/")) == {path.removeprefix("/app/cache/"): expect}


def test_rerun_on_unchanged_volume_skips_the_walk(
    volinit_image: str, base_image: str, new_volume: Any, write_spec: Any, record_property: Any,
) -> None:
    volume = new_volume()
    as_root(base_image, volume, "import os\nfor d in range(50):\n"
            "    os.makedirs(f'/v/d{d}')\n"
            "    for f in range(100): open(f'/v/d{d}/f{f}', 'w').close()\n")
    spec = write_spec(SPEC.format(owner="1000:1000"))

    first = init(volinit_image, volume, spec, command=["apply", "--json"])
    assert first.code == 0, first.err
    walked = json.loads(first.out)["volumes"][0]
    assert walked["entries"] >= 5050 and walked["changed"] >= 5050

    rerun = init(volinit_image, volume, spec, command=["apply", "--json"])
    assert rerun.code == 0, rerun.err
    doc = json.loads(rerun.out)["volumes"][0]
    assert "walk skipped" in doc["walk"] and doc["entries"] == 0 and doc["changed"] == 0
    assert doc["created"] == [] and doc["dirs_fixed"] == []
    assert "root already right, walk skipped" in rerun.err
    # the container's whole life, start to exit, as `compose up` pays it on every start
    record_property("rerun_wall_seconds", round(rerun.seconds, 2))
    print(f"\nrerun on an unchanged volume: {rerun.seconds:.2f} s wall (walk {doc['seconds']} s); "
          f"first run {first.seconds:.2f} s for {walked['entries']} entries")
    assert doc["seconds"] < 0.5
    assert rerun.seconds < 10


@pytest.mark.parametrize("delivery", ["file-at-default-path", "VOLINIT_SPEC"])
def test_spec_delivery(volinit_image: str, base_image: str, new_volume: Any, write_spec: Any, delivery: str) -> None:
    volume = new_volume()
    as_root(base_image, volume, OLD_ROOT_DATA)
    spec = write_spec(SPEC.format(owner="1000:1000"))
    if delivery == "file-at-default-path":
        run = init(volinit_image, volume, spec)
    else:
        # nothing at the default path: only the variable can have led volinit to the spec
        run = init(volinit_image, volume, None, env={"VOLINIT_SPEC": "/run/specs/cache.yaml"},
                   mounts=[(volume, "/app/cache", "rw"), (spec, "/run/specs/cache.yaml", "ro")])
    assert run.code == 0, run.err
    assert owners(base_image, volume, "", "state.json") == {"": "1000:1000", "state.json": "1000:1000"}


def test_missing_spec_is_a_usage_error_naming_the_fix(volinit_image: str, new_volume: Any) -> None:
    run = init(volinit_image, new_volume(), None)
    assert run.code == 2
    assert f"volinit: error: spec at {SPEC_PATH}: spec file not found" in run.err
    assert "configs:" in run.err


@pytest.mark.parametrize(
    ("flags", "mount_mode", "message"),
    [
        # root without CAP_CHOWN is just another user to the kernel
        pytest.param({"cap_add": []}, "rw", "needs root with CAP_CHOWN", id="cap-drop-all-alone"),
        pytest.param({}, "ro", "Read-only file system (the volume is mounted read-only; mount it read-write",
                     id="read-only-volume-mount"),
    ],
)
def test_cannot_fix_exits_1_naming_the_fix(
    volinit_image: str, base_image: str, new_volume: Any, write_spec: Any,
    flags: dict[str, Any], mount_mode: str, message: str,
) -> None:
    volume = new_volume()
    as_root(base_image, volume, OLD_ROOT_DATA)
    run = init(volinit_image, volume, write_spec(SPEC.format(owner="1000:1000")), mode=mount_mode, **flags)
    assert run.code == 1, run.err
    assert message in run.err
    assert "Traceback" not in run.err
    assert owners(base_image, volume, "")[""] == "0:0"


def test_adhoc_apply_of_root_is_refused(volinit_image: str) -> None:
    run = one_shot(volinit_image, ["apply", "/", "--owner", "1000"], **HARDENED)
    assert run.code == 2
    assert "volinit: error: PATH /: refusing system path /" in run.err


BAD_SPECS = [
    pytest.param("prune: 24 hours", "volumes./app/models.dirs..tmp.prune", "bad duration", id="bad-duration"),
    pytest.param("mode: 0750", "volumes./app/models.dirs..tmp.mode", "quote it", id="unquoted-mode"),
    pytest.param("ownr: x", "volumes./app/models.dirs..tmp.ownr", "unknown key", id="unknown-key"),
]


@pytest.mark.parametrize(("bad_line", "key_path", "why"), BAD_SPECS)
def test_bad_spec_exits_2_with_key_path_and_touches_nothing(
    volinit_image: str, base_image: str, new_volume: Any, write_spec: Any, bad_line: str, key_path: str, why: str,
) -> None:
    # the first volume is valid and would be changed; the error is in the second one, so
    # only validating the whole spec first keeps the first volume as it was
    cache, models = new_volume(), new_volume()
    as_root(base_image, cache, OLD_ROOT_DATA)
    spec = write_spec(SPEC.format(owner="1000:1000") + "  /app/models:\n    dirs:\n      .tmp:\n        " + bad_line + "\n")
    run = init(volinit_image, cache, spec,
               mounts=[(cache, "/app/cache", "rw"), (models, "/app/models", "rw"), (spec, SPEC_PATH, "ro")])
    assert run.code == 2, run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"volinit: error: spec at {key_path}: "), run.err
    assert why in lines[0]
    assert owners(base_image, cache, "", "state.json") == {"": "0:0", "state.json": "0:0"}
    listing = one_shot(base_image, ["ls", "-A", "/v"], [(cache, "/v", "ro")], network_mode="none").out.split()
    assert ".tmp" not in listing


def test_image_ships_the_shim_and_its_version(volinit_image: str, base_image: str) -> None:
    import docker

    version = one_shot(volinit_image, ["--version"], **HARDENED)
    assert version.code == 0 and version.out.startswith("volinit ")
    client = docker.from_env()
    try:
        image = client.images.get(volinit_image)
    finally:
        client.close()
    config, labels = image.attrs["Config"], image.labels
    # `image: volinit` and a spec is all a compose service needs; root, because chown needs it
    assert (config["Entrypoint"], config["Cmd"], config["User"]) == (["volinit"], ["apply"], "0:0")
    assert labels["org.opencontainers.image.version"] == version.out.split()[1]
    assert labels["org.opencontainers.image.title"] == "volinit"
    assert "org.opencontainers.image.source" in labels


def test_the_shim_copied_from_the_image_runs_in_a_service_image(volinit_image: str, base_image: str) -> None:
    # The image has no shell to run the shim itself: it ships it for service images, which
    # take it with COPY --from as the README says; there it runs as any uid on a read-only root.
    tag = f"volinit-test-shim-{uuid.uuid4().hex[:8]}"
    dockerfile = (f"FROM {base_image}\n"
                  f"COPY --from={volinit_image} /usr/local/bin/volinit-entrypoint /usr/local/bin/\n"
                  'ENTRYPOINT ["volinit-entrypoint"]\n')
    build = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    try:
        shim = one_shot(tag, ["sh", "-c", "echo ran as $(id -u)"], user="1000:1000", **HARDENED)
        assert (shim.code, shim.out.strip()) == (0, "ran as 1000")
        no_cmd = one_shot(tag, [], **HARDENED)
        assert no_cmd.code == 64 and "volinit-entrypoint: error: no command to run" in no_cmd.err
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def image_files(image: str) -> dict[str, tarfile.TarInfo]:
    """Every path in the image's filesystem (without a leading /), as `docker export` has it."""
    created = subprocess.run(["docker", "create", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        exported = subprocess.run(["docker", "export", created], capture_output=True, check=True).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", created], capture_output=True)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def test_the_image_holds_no_shell_package_manager_or_pip(volinit_image: str) -> None:
    files = image_files(volinit_image)
    names = {name.rsplit("/", 1)[-1] for name in files}
    for tool in ("sh", "bash", "dash", "busybox", "apt", "apt-get", "dpkg", "pip", "pip3", "perl", "ls", "chown"):
        assert tool not in names, f"{tool} is in the image: {[n for n in files if n.endswith('/' + tool)]}"
    assert not [n for n in files if "/site-packages/pip" in n or "/site-packages/setuptools" in n]
    # what it does hold: the entrypoint, the shim service images copy, the venv's interpreter
    for path in ("usr/local/bin/volinit", "usr/local/bin/volinit-entrypoint", "opt/volinit/pyvenv.cfg",
                 "etc/passwd", "etc/group"):
        assert path in files, path
    assert files["usr/local/bin/volinit-entrypoint"].mode & 0o755 == 0o755
    # volinit as bytecode only, no source beside it (nothing for Python to compare or rewrite)
    assert not [n for n in files if n.endswith(".py")]


def test_the_image_is_within_its_size_targets(volinit_image: str, record_property: Any) -> None:
    # The targets: 16 MB on disk, 7 MB as pulled (gzip -9 of `docker save`)
    size = int(subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", volinit_image],
                              capture_output=True, text=True, check=True).stdout)
    saved = subprocess.run(["docker", "save", volinit_image], capture_output=True, check=True).stdout
    compressed = len(gzip.compress(saved, compresslevel=9))
    record_property("image_bytes", size)
    record_property("image_gzip_bytes", compressed)
    print(f"\n{volinit_image}: {size / 1e6:.1f} MB, {compressed / 1e6:.1f} MB gzip -9")
    assert size <= 16_000_000
    assert compressed <= 7_000_000


@pytest.mark.parametrize("user", ["0:0", "1000:1000"], ids=["root", "non-root"])
def test_every_command_runs_read_only_as_root_and_not(
    volinit_image: str, base_image: str, new_volume: Any, user: str,
) -> None:
    # the image has only what the builder measured: each command's whole path must be in it
    volume = new_volume()
    as_root(base_image, volume, "import os\nos.makedirs('/v/d/sub')\nopen('/v/d/old', 'w').close()\n"
            "os.utime('/v/d/old', (1e9, 1e9))\nfor p in ('/v', '/v/d', '/v/d/sub', '/v/d/old'): os.chown(p, 1000, 1000)\n")
    mounts = [(volume, "/app/cache", "rw")]
    runs = {
        "version": (["--version"], 0, "volinit "),
        "help": (["--help"], 0, "Usage: volinit"),
        "doctor": (["doctor", "--json", "--path", "/app/cache"], 0, '"healthy": true'),
        "prune": (["prune", "/app/cache/d", "--older-than", "1d", "--json"], 0, '"removed"'),
        "apply": (["apply", "/app/cache", "--owner", "1000", "--dir", ".tmp", "--json"], 0, '"volumes"'),
        "bad-duration": (["prune", "/app/cache/d", "--older-than", "soon"], 2, "volinit: error: "),
        "no-spec": (["apply"], 2, "spec file not found"),
    }
    for name, (argv, code, text) in runs.items():
        run = one_shot(volinit_image, argv, mounts, user=user, env={"TMPDIR": "/app/cache"}, **HARDENED)
        assert run.code == code, (name, run.err)
        assert text in run.out + run.err, (name, run.out, run.err)
        assert "Traceback" not in run.err, (name, run.err)


def test_the_build_fails_when_the_tree_misses_what_a_command_needs(volinit_image: str, base_image: str) -> None:
    # The smoke stage is what makes a missing module a build failure: the Dockerfile's own
    # smoke stage, on the builder's tree with one module taken out.
    tag = f"volinit-test-build-{uuid.uuid4().hex[:8]}"
    build = subprocess.run(["docker", "build", "-q", "--target", "build", "--build-arg", f"BASE_IMAGE={base_image}",
                            "-t", tag, str(REPO)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    dockerfile = (REPO / "Dockerfile").read_text()
    start = dockerfile.index("FROM scratch AS smoke")
    smoke_stage = dockerfile[start:dockerfile.index("\nFROM ", start)]
    site = "/rootfs/opt/volinit/lib/python3*/site-packages"
    try:
        for removed, named in ((f"{site}/volinit/doctor.pyc", ["doctor@0:0", "doctor-json@65534:65534"]),
                               # no output changes without it, only every start's speed
                               (f"{site}/yaml/_yaml.*", ["module yaml._yaml"])):
            broken = f"FROM {tag} AS build\nRUN rm {removed}\n" + smoke_stage
            run = subprocess.run(["docker", "build", "-q", "-"], input=broken, capture_output=True, text=True)
            assert run.returncode != 0, run.stdout
            # the classic builder colours a step's stderr
            plain = re.sub(r"\x1b\[[0-9;]*m", "", run.stderr)
            errors = [line.strip() for line in plain.splitlines() if line.strip().startswith("minimal: error: ")]
            assert errors and errors[0].startswith("minimal: error: the image failed its smoke test: "), run.stderr
            for scenario in named:
                assert scenario in errors[0], errors[0]
            assert "version@" not in errors[0], errors[0]
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


@pytest.mark.parametrize("args", [["--help"], ["apply", "--help"], ["apply", "--bogus"], ["prune"]],
                         ids=["help", "apply-help", "unknown-option", "missing-argument"])
def test_the_image_prints_what_the_installed_cli_prints(volinit_image: str, args: list[str]) -> None:
    # The image leaves out rich (typer's dependency, never imported on volinit's paths):
    # help and usage errors must read the same as from a full install.
    from helpers import volinit

    width = {"COLUMNS": "80"}
    host = volinit(*args, env=width)
    image = one_shot(volinit_image, args, env=width, **HARDENED)
    assert (image.code, image.out, image.err) == (host.code, host.out, host.err)
