"""A report renderer that caches compiled templates, as Jinja2's FileSystemBytecodeCache does.

Like the SDK in seed 002 it keeps that cache next to its templates unless told otherwise:
installed by pip as root into site-packages and run as uid 1000 on a read-only root
filesystem, its first render failed with "Permission denied: .../site-packages/...
/.jinja_cache". Here XDG_CACHE_HOME, when set, moves the cache out of the package.
"""

import hashlib
import marshal
import os
import types

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(PACKAGE_DIR, "templates")


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(base, "reportgen") if base else os.path.join(PACKAGE_DIR, ".template_cache")


def _compiled(name: str) -> types.CodeType:
    with open(os.path.join(TEMPLATES, name), encoding="utf-8") as fh:
        source = fh.read()
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    cached = os.path.join(cache_dir(), f"{name}.{key}.bin")
    try:
        with open(cached, "rb") as fh:
            return marshal.load(fh)  # noqa: S302 - the service's own cache volume, as with Jinja2
    except FileNotFoundError:
        pass
    code = compile("f" + repr(source), name, "eval")  # "{title}" placeholders, as an f-string
    os.makedirs(cache_dir(), exist_ok=True)
    partial = f"{cached}.{os.getpid()}"
    with open(partial, "wb") as fh:
        marshal.dump(code, fh)
    os.replace(partial, cached)  # two workers rendering at once never read half a file
    return code


def render(name: str, **context: object) -> str:
    return eval(_compiled(name), {"__builtins__": {}}, context)  # noqa: S307 - our own template
