"""`volinit doctor` in real containers of the image, run as the service user would run it.

Each row replays one seed incident with the flags a hardened service has (uid 1000,
--read-only) and checks which finding doctor reports, or that it reports none.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.docker



@pytest.fixture(scope="module")
def site_packages(volinit_image: str) -> str:
    """The image's site-packages (its Python version depends on the base image). Asked of
    site, which every start loads: the image holds only the stdlib modules volinit uses."""
    out = subprocess.run(["docker", "run", "--rm", "--entrypoint", "/opt/volinit/bin/python", volinit_image,
                          "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def prepared_volume(volinit_image: str, base_image: str) -> Iterator[str]:
    """A volume the init container has handed to 1000:1000, with .tmp in it."""
    name = f"volinit-doctor-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "volume", "create", name], check=True, capture_output=True)
    try:
        init = subprocess.run(["docker", "run", "--rm", "-v", f"{name}:/app", volinit_image,
                               "apply", "/app", "--owner", "1000:1000", "--dir", ".tmp"],
                              capture_output=True, text=True)
        assert init.returncode == 0, init.stderr
        # what an older root container left behind in the same volume
        old = subprocess.run(["docker", "run", "--rm", "-v", f"{name}:/app",
                              base_image, "python3", "-c", "import os; os.mkdir('/app/old', 0o755)"],
                             capture_output=True, text=True)
        assert old.returncode == 0, old.stderr
        yield name
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", name], capture_output=True)


def doctor(image: str, flags: list[str], args: list[str]) -> tuple[int, dict]:
    proc = subprocess.run(["docker", "run", "--rm", "--user", "1000:1000", "--read-only", *flags,
                           image, "doctor", "--json", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


# flags for docker run (VOL: the prepared volume, SITE: the image's site-packages), doctor's args,
# and the checks that must be findings (empty: healthy)
ROWS = {
    "healthy: TMPDIR on the volume, data on the volume": (
        ["-v", "VOL:/app", "-e", "TMPDIR=/app/.tmp"], ["--path", "/app", "--min-free", "1M"], set()),
    "seed 000: read-only root and no TMPDIR: no usable temp dir": (
        [], [], {"temp dir"}),
    "seed 002: cache variable inside site-packages": (
        ["-v", "VOL:/app", "-e", "TMPDIR=/app/.tmp", "-e", "XDG_CACHE_HOME=SITE/cache"], [], {"XDG_CACHE_HOME"}),
    "seed 003: an 8 MB /tmp tmpfs against a 64M need": (
        ["--tmpfs", "/tmp:size=8m"], ["--min-free", "64M"], {"free space"}),
    "seed 004: state on a tmpfs does not outlive the container": (
        ["--tmpfs", "/tmp:size=8m"], ["--path", "/tmp"], {"persistence"}),
    "seed 004: state on the container's own layer": (
        ["-v", "VOL:/app", "-e", "TMPDIR=/app/.tmp"], ["--path", "/srv"], {"persistence"}),
    "seed 003: TMPDIR below a root-owned dir an old container left": (
        ["-v", "VOL:/app", "-e", "TMPDIR=/app/old/.tmp"], [], {"TMPDIR", "temp dir"}),
}


@pytest.mark.parametrize("flags,args,problems", list(ROWS.values()), ids=list(ROWS))
def test_doctor_finds_each_incident(volinit_image: str, prepared_volume: str, site_packages: str,
                                    flags: list[str], args: list[str], problems: set[str]) -> None:
    flags = [f.replace("VOL:", f"{prepared_volume}:").replace("SITE", site_packages) for f in flags]
    code, doc = doctor(volinit_image, flags, args)
    found = {f["check"] for f in doc["findings"]}
    assert found == problems, doc
    assert code == (1 if problems else 0)
    assert doc["healthy"] is (not problems)
    for finding in doc["findings"]:
        assert finding["what"] and finding["where"] and finding["fix"], finding
