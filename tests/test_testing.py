"""volinit.testing, as a user's CI would use it: on the ocr-service example, and on a broken spec."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from volinit.testing import InitFailed, compose_up

pytestmark = pytest.mark.docker

EXAMPLES = Path(__file__).resolve().parent.parent / "compose-examples"


def leftovers(project: str) -> list[str]:
    """Containers and volumes compose still holds for a project."""
    label = f"label=com.docker.compose.project={project}"
    found = []
    for cmd in (["docker", "ps", "-aq", "--filter", label], ["docker", "volume", "ls", "-q", "--filter", label]):
        found += subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return found


def test_compose_up_returns_the_init_result_and_tears_down(volinit_image: str, base_image: str) -> None:
    env = {"VOLINIT_IMAGE": volinit_image, "BASE_IMAGE": base_image}
    with compose_up(EXAMPLES / "ocr-service" / "compose.yaml", env=env, build=True) as stack:
        assert stack.init.exit_code == 0
        assert "volinit: /app/cache: owner 1000:1000" in stack.init.log
        out, err, code = stack.exec("ocr-service", "python3", "-c",
                                    "import os, tempfile; fd, p = tempfile.mkstemp(); print(p, os.fstat(fd).st_uid)")
        assert code == 0, err
        path, uid = out.split()
        assert path.startswith("/app/cache/.tmp/") and uid == "1000"
        # a command that fails reports its code instead of raising
        assert stack.exec("ocr-service", "sh", "-c", "echo no >&2; exit 3") == ("", "no\n", 3)
        project = stack.project
    assert leftovers(project) == []
    # compose names built images after the project; remove ours (the test's, not compose_up's job)
    subprocess.run(["docker", "image", "rm", "-f", f"{project}-ocr-service"], capture_output=True)


def test_failing_init_raises_with_its_log(tmp_path: Path, volinit_image: str, base_image: str) -> None:
    example = tmp_path / "web"
    shutil.copytree(EXAMPLES / "non-root-web", example)
    spec = example / "volinit.yaml"
    spec.write_text(spec.read_text().replace("prune: 24h", "prune: 24 hours"))
    env = {"VOLINIT_IMAGE": volinit_image, "BASE_IMAGE": base_image}

    with pytest.raises(InitFailed) as failed:
        with compose_up(example / "compose.yaml", env=env, project="volinit-testing-bad-spec"):
            pytest.fail("the body must not run when the init fails")

    assert failed.value.result.exit_code == 2
    message = str(failed.value)
    assert "init service 'volinit' of compose project 'volinit-testing-bad-spec' exited 2" in message
    # the init's own log, so CI output says what to fix without a second look
    assert "volinit: error: spec at volumes./app/scratch.dirs.tmp.prune: bad duration '24 hours'" in message
    assert leftovers("volinit-testing-bad-spec") == []
