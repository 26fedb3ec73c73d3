"""Smoke-test your own compose project in CI: bring it up and judge the one-shot init by its exit code.

Install with ``pip install 'volinit[testing]'``. Example (pytest)::

    from volinit.testing import compose_up

    def test_stack_starts():
        with compose_up("deploy/compose.yaml", env={"VOLINIT_IMAGE": "volinit:ci"}) as stack:
            assert stack.init.exit_code == 0
            out, err, code = stack.exec("app", "python3", "-c", "import tempfile; tempfile.mkstemp()")
            assert code == 0, err

Waiting for a log line from a one-shot container races its exit and says nothing when it
fails; its exit code is what compose's ``service_completed_successfully`` gates on, so that
is what this waits for (testcontainers-python#681 asks for exactly this). A failing init
raises :class:`InitFailed`, whose message carries the init's log.

docker and testcontainers are imported inside the functions: importing ``volinit`` (as the
init container does on every start) never pays for them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    from testcontainers.compose import DockerCompose

DEFAULT_INIT_SERVICE = "volinit"


@dataclass(frozen=True)
class InitResult:
    """How the one-shot init service ended."""

    service: str
    exit_code: int
    log: str  # stdout and stderr, interleaved as the container wrote them


class InitFailed(AssertionError):
    """The init service exited non-zero (or never exited); the message carries its log.

    An AssertionError, so pytest reports it as the test's failure, not as an error in it.
    """

    def __init__(self, result: InitResult, project: str, why: str = "") -> None:
        self.result = result
        why = why or f"exited {result.exit_code}"
        log = result.log.rstrip() or "(no output)"
        super().__init__(f"init service {result.service!r} of compose project {project!r} {why}; its log:\n{log}")


class ComposeUpFailed(RuntimeError):
    """`docker compose up` failed although the init service succeeded (or never ran)."""


@dataclass
class Stack:
    """A running compose project whose init service exited 0."""

    compose: DockerCompose
    project: str
    init: InitResult

    def exec(self, service: str, *command: str) -> tuple[str, str, int]:
        """Run a command in a running service as its user: (stdout, stderr, exit code).

        A failing command returns its exit code (DockerCompose.exec_in_container raises instead).
        """
        import subprocess

        run = subprocess.run([*self.compose.compose_command_property, "exec", "-T", service, *command],
                             cwd=str(self.compose.context), capture_output=True, text=True)
        return run.stdout, run.stderr, run.returncode

    def logs(self, *services: str) -> str:
        out, err = self.compose.get_logs(*services)
        return out + err


def _env_file(values: Mapping[str, str], directory: str) -> str:
    """Write values as a compose env file: compose reads --env-file, never our os.environ changes."""
    lines = []
    for key, value in values.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"env value for {key} contains a quote or newline, which a compose env file cannot carry")
        lines.append(f"{key}='{value}'")  # single quotes: no $-interpolation of the value
    path = os.path.join(directory, "volinit-testing.env")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def wait_for_init(compose: DockerCompose, project: str, service: str = DEFAULT_INIT_SERVICE,
                  timeout: float = 300.0) -> InitResult:
    """Wait for the init service's container to exit and return its exit code and log.

    Raises InitFailed when there is no such container or it does not exit within timeout.
    """
    import docker
    import requests.exceptions

    try:
        found = compose.get_container(service_name=service, include_all=True)
    except Exception as exc:  # testcontainers raises its own ContainerIsNotRunning
        raise InitFailed(InitResult(service, -1, ""), project, f"has no container ({exc})") from None
    client = docker.from_env(timeout=int(timeout) + 5)
    try:
        container = client.containers.get(found.ID)
        try:
            code = int(container.wait(timeout=timeout)["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            log = container.logs().decode(errors="replace")
            raise InitFailed(InitResult(service, -1, log), project, f"did not exit within {timeout:.0f} s") from None
        return InitResult(service, code, container.logs().decode(errors="replace"))
    finally:
        client.close()


@contextmanager
def compose_up(
    compose_file: str | os.PathLike[str],
    *,
    init_service: str = DEFAULT_INIT_SERVICE,
    env: Mapping[str, str] | None = None,
    project: str | None = None,
    build: bool = False,
    services: Sequence[str] | None = None,
    timeout: float = 300.0,
) -> Iterator[Stack]:
    """Bring a compose project up, check its init service exited 0, yield it, and tear it down.

    compose_file   the compose.yaml; its directory is the project directory (and its .env is read)
    init_service   the one-shot service to judge by exit code (default "volinit")
    env            variables for compose's interpolation, e.g. {"VOLINIT_IMAGE": "volinit:ci"}
    project        compose project name (default: a unique one, so parallel runs do not collide)
    build          build images first (`up --build`)
    services       bring up only these (and what they depend on)

    Raises InitFailed (with the init's log) when the init service exits non-zero, and
    ComposeUpFailed when `up --wait` fails otherwise (an unhealthy service, a bad file).
    The project is torn down with its volumes (`down --volumes`) in every case.
    """
    from subprocess import CalledProcessError

    from testcontainers.compose import DockerCompose

    path = Path(compose_file).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no compose file at {path}")
    name = project or f"{path.parent.name}-{uuid.uuid4().hex[:8]}".lower()
    with tempfile.TemporaryDirectory(prefix="volinit-testing-") as scratch:
        env_files = [str(path.parent / ".env")] if (path.parent / ".env").is_file() else []
        env_files.append(_env_file({**(env or {}), "COMPOSE_PROJECT_NAME": name}, scratch))
        compose = DockerCompose(context=str(path.parent), compose_file_name=path.name, build=build, wait=True,
                                env_file=env_files, services=list(services) if services else None)
        try:
            up_error: CalledProcessError | None = None
            try:
                compose.start()  # `up --wait`: returns once healthchecks pass, fails if the init does
            except CalledProcessError as exc:
                up_error = exc
            try:
                init = wait_for_init(compose, name, init_service, timeout)
            except InitFailed:
                if up_error is None:
                    raise
                raise ComposeUpFailed(_up_failure(up_error, compose)) from None
            if init.exit_code != 0:
                raise InitFailed(init, name)
            if up_error is not None:
                raise ComposeUpFailed(_up_failure(up_error, compose))
            yield Stack(compose, name, init)
        finally:
            compose.stop(down=True)


def _up_failure(exc: Any, compose: DockerCompose) -> str:
    err = (exc.stderr or b"").decode(errors="replace").strip()
    try:
        out, log_err = compose.get_logs()
        logs = (out + log_err).strip()
    except Exception:  # the logs are a courtesy; the up error is the news
        logs = ""
    return f"docker compose up failed (exit {exc.returncode}): {err}" + (f"\nservice logs:\n{logs}" if logs else "")
