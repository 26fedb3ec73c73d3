"""The image row: the shell-less image against the previous one, in one interleaved run.

  python -m bench.image --new volinit:latest --old volinit:old-image [--files 200000] [--json]

Build the previous image first, e.g. from main's Dockerfile:
  git show main:Dockerfile > /tmp/Dockerfile.old && docker build -f /tmp/Dockerfile.old -t volinit:old-image .

Sizes are what a user pulls and stores: `docker image inspect`'s Size, `docker save | gzip
-9`, and the files in the exported filesystem. Times are whole `docker run --rm` calls
(create, start, the interpreter's start-up and imports, exit, remove), the way compose runs
the init service on every `up`: `--version`, and `apply` on an unchanged volume of --files
entries (the root is already right, so the walk is skipped). The two images alternate who
goes first each round (runner.interleave).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from bench import trees
from bench.runner import BenchError, Tool, interleave

HARDENED = ["--read-only", "--network", "none", "--cap-drop", "ALL", "--cap-add", "CHOWN",
            "--cap-add", "FOWNER", "--cap-add", "DAC_OVERRIDE"]
OWNER = "1000:1000"


def docker(*args: str) -> bytes:
    done = subprocess.run(["docker", *args], capture_output=True)
    if done.returncode != 0:
        raise BenchError(f"docker {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def sizes(image: str) -> dict:
    """Bytes on disk, bytes as gzip -9 of `docker save`, and files in the exported tree."""
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image))
    compressed = len(gzip.compress(docker("save", image), compresslevel=9))
    container = docker("create", image).decode().strip()
    try:
        exported = docker("export", container)
    finally:
        docker("rm", "-f", container)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        files = len(tar.getmembers())
    return {"bytes": size, "gzip_bytes": compressed, "files": files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.image", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", default="volinit:latest", help="the image under test")
    parser.add_argument("--old", default="volinit:old-image", help="the previous image")
    parser.add_argument("--files", type=int, default=200_000, help="entries in the unchanged volume")
    parser.add_argument("--repeat", type=int, default=15, help="samples per image and measurement")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.image: error: run as root (the volume is handed to 1000:1000)", file=sys.stderr)
        return 2

    images = {"new": args.new, "old": args.old}
    result: dict = {"images": images, "files_in_volume": args.files, "sizes": {}, "times": {}}
    for which, image in images.items():
        result["sizes"][which] = sizes(image)

    volume = tempfile.mkdtemp(prefix="volinit-bench-image-")
    try:
        tree = os.path.join(volume, "v")
        trees.build_chown_tree(tree, args.files)
        # the first init: from now on the volume is unchanged and its root already right
        subprocess.run(["chown", "-R", OWNER, tree], check=True)
        mount = ["-v", f"{tree}:/app/cache"]
        rows = {
            "version": {w: Tool(w, ["docker", "run", "--rm", *HARDENED, image, "--version"])
                        for w, image in images.items()},
            "rerun_unchanged": {w: Tool(w, ["docker", "run", "--rm", *HARDENED, *mount, image,
                                            "apply", "/app/cache", "--owner", OWNER])
                                for w, image in images.items()},
        }
        for tools in rows.values():
            interleave(list(tools.values()), args.repeat)
        for key, tools in rows.items():
            new, old = tools["new"].median, tools["old"].median
            assert new is not None and old is not None
            result["times"][key] = {"new_s": new, "old_s": old, "ratio": new / old,
                                    "new_samples_s": [round(x.seconds, 4) for x in tools["new"].samples],
                                    "old_samples_s": [round(x.seconds, 4) for x in tools["old"].samples]}
    finally:
        shutil.rmtree(volume, ignore_errors=True)

    s = result["sizes"]
    lines = ["| measurement | new | previous | ratio |", "|---|---|---|---|"]
    for key, label in (("bytes", "size on disk (MB)"), ("gzip_bytes", "gzip -9 of docker save (MB)"),
                       ("files", "files in the exported tree")):
        new, old = s["new"][key], s["old"][key]
        shown = (f"{new / 1e6:.1f} | {old / 1e6:.1f}" if key != "files" else f"{new} | {old}")
        lines.append(f"| {label} | {shown} | {new / old:.3f}x |")
    rerun = f"docker run --rm IMAGE apply, unchanged {args.files // 1000}k-file volume"
    for key, label in (("version", "docker run --rm IMAGE --version"), ("rerun_unchanged", rerun)):
        t = result["times"][key]
        lines.append(f"| {label} (median of {args.repeat}) | {t['new_s'] * 1000:.0f} ms | {t['old_s'] * 1000:.0f} ms "
                     f"| {t['ratio']:.2f}x |")
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
