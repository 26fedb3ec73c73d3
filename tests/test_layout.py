"""Two worlds: what the init container runs on every start imports nothing of the host side
(volinit.host, the Docker SDK), so a container start never pays for it and the core install
never needs it (STYLE.md, "The house as it grows")."""

from __future__ import annotations

import subprocess
import sys

import pytest

APPLY_PATH = ("volinit.cli", "volinit.apply", "volinit.walk", "volinit.prune", "volinit.spec", "volinit.doctor")
FORBIDDEN = ("volinit.host", "docker", "requests", "urllib3")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def forbidden(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def test_importing_the_apply_path_loads_no_host_module() -> None:
    assert forbidden(loaded_after("\n".join(f"import {m}" for m in APPLY_PATH))) == []


@pytest.mark.parametrize("command", ["apply", "prune", "doctor"])
def test_running_an_init_command_loads_no_host_module(command: str) -> None:
    code = ("from volinit import cli\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    cli.main(['{command}', '--help'])")
    assert forbidden(loaded_after(code)) == []


def test_importtime_of_apply_help_names_no_host_module() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "volinit", "apply", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "volinit.cli" in names  # the measurement saw the CLI load
    assert forbidden(names) == []


def test_the_host_side_is_where_check_lives() -> None:
    # the check command itself does reach the host side, lazily, when it runs
    mods = loaded_after("import volinit.host.check, volinit.host.compose, volinit.host.rules, volinit.host.probe")
    assert "volinit.host.rules" in mods
    assert "docker" not in mods  # even the host modules import the SDK only inside functions
