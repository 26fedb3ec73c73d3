"""The Docker engine for host-side commands: connect once, say plainly when it is not there."""

from __future__ import annotations

import os
from typing import Any, Optional

from volinit.errors import UsageError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def reason(exc: BaseException) -> str:
    """The OS-level cause buried in a docker/requests/urllib3 chain, else the first line."""
    seen: set[int] = set()
    cur: Optional[BaseException] = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            return cur.strerror
        nxt = getattr(cur, "reason", None)
        cur = nxt if isinstance(nxt, BaseException) else (cur.__cause__ or cur.__context__)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect(*, required: bool, why: str = "") -> tuple[Optional[Any], str]:
    """(client, "") when an engine answers; else (None, the reason) or, when required,
    a UsageError naming the way around it (`why` says what needed the engine)."""
    try:
        import docker
    except ImportError:
        problem = "the Docker SDK for Python is not installed"
        if required:
            raise UsageError(why or "the Docker engine is needed", "", problem,
                             "pip install 'volinit[docker]', or pass --static") from None
        return None, problem
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # the SDK wraps some failures and lets requests' own escape
        problem = f"no Docker engine answers at {host()}: {reason(exc)}"
        if required:
            raise UsageError(why or "the Docker engine is needed", "", problem,
                             "start the engine or set DOCKER_HOST, or pass --static to check the "
                             "configuration alone") from None
        return None, problem
    return client, ""
