"""Build the shell-less image's file tree by measurement, then prove the tree is enough.

Runs in the Dockerfile's builder stage with the base image's own python3 (stdlib only),
against the venv where volinit is installed:

  trace     run every volinit command of SCENARIOS with the full install, recording the
            modules each process imported, the files it opened (an audit hook) and the
            shared objects it mapped (/proc/self/maps), plus each run's exit code and
            output; then import, in one more traced process, every module the volinit
            code that ran imports on paths no healthy run takes (a bug's traceback, a
            forked walk), found by reading that code's import statements.
  assemble  copy exactly that into ROOT: the interpreter and the libraries the loader
            resolves for it and for every mapped .so (with each symlink on the way, so
            /lib64 and merged /usr keep working on any architecture), each module as
            bytecode only, the venv's pyvenv.cfg, an ld.so.cache for ROOT.
  smoke     in a stage whose root is that tree (FROM scratch, so the runtime mounts /proc
            as for any container), run the same scenarios as root and as nobody, and fail
            unless every exit code and output matches the full install's, every traced
            module is there, no run printed a traceback and no run changed a file. It runs
            on the tree's own interpreter and stdlib: it imports only modules volinit's
            runs load (json, re, shutil, subprocess, pathlib), so a tree without them
            fails here too.

Nothing here names an architecture or a Python version: paths come from the interpreter
(sysconfig, sys.prefix), from ldd and from the kernel's maps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

# Where every scenario's volumes and specs live, in the builder and in the smoke stage.
WORK = "/tmp/volinit-smoke"
NOBODY = "65534:65534"

# Python that records, at exit, what this process used. Installed as sitecustomize on
# PYTHONPATH for tracing only; it imports nothing the interpreter has not loaded already.
HOOK = r'''
import atexit, os, sys
_opened = set()
def _audit(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        _opened.add(os.fsdecode(args[0]))
sys.addaudithook(_audit)
def _dump():
    mods = []
    for name, mod in list(sys.modules.items()):
        spec = getattr(mod, "__spec__", None)
        mods.append((name, getattr(mod, "__file__", None) or "", getattr(spec, "origin", None) or ""))
    with open("/proc/self/maps") as f:
        maps = sorted({line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6})
    with open(os.environ["VOLINIT_TRACE_DIR"] + "/%d" % os.getpid(), "w") as out:
        for name, file, origin in mods:
            out.write("mod\t%s\t%s\t%s\n" % (name, file, origin))
        for path in maps:
            out.write("map\t%s\n" % path)
        for path in sorted(_opened):
            out.write("open\t%s\n" % path)
atexit.register(_dump)
'''

SPEC = 'version: 1\nowner: "1000:1000"\nvolumes:\n  {work}/vol:\n    mode: "0750"\n    dirs:\n      .tmp:\n' \
       '        mode: "0700"\n        prune: 24h\n        keep: ["*.lock"]\n'
BAD_SPECS = {
    "bad-yaml.yaml": "version: [1\n",
    "unquoted-mode.yaml": "version: 1\nowner: '1'\nvolumes:\n  /data: {mode: 0750}\n",
    "unknown-key.yaml": "version: 1\nowner: '1'\nvolumes:\n  /data: {ownr: x}\n",
    "nested.yaml": "version: 1\nvolumes: " + "[" * 200 + "]" * 200 + "\n",
}


def prepare(work: Path) -> None:
    """The scenarios' starting state, made afresh before each mode runs them."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o755)
    (work / "volinit.yaml").write_text(SPEC.format(work=WORK))
    for name, text in BAD_SPECS.items():
        (work / name).write_text(text)
    vol = work / "vol"
    (vol / "datalab" / "models").mkdir(parents=True)
    (vol / "datalab" / "models" / "model.bin").write_text("weights")
    (vol / "state.json").write_text("{}")
    # enough entries (above walk.PARALLEL_AFTER) in enough subtrees for forked workers
    big = work / "big"
    for d in range(40):
        (big / f"d{d}").mkdir(parents=True)
        for f in range(150):
            (big / f"d{d}" / f"f{f}").touch()
    old = 1_000_000_000  # 2001: older than any prune duration below
    for tree, owner in ((work / "prune-root", 0), (work / "prune-nobody", 65534)):
        (tree / "sub").mkdir(parents=True)
        for name in ("old.txt", "keep.lock", "sub/old.bin"):
            (tree / name).write_text("x")
            os.utime(tree / name, (old, old))
        (tree / "new.txt").write_text("x")
        for path in (tree, tree / "sub", *tree.rglob("*")):
            os.chown(path, owner, owner)
    mine = work / "nobody-home"
    (mine / ".tmp").mkdir(parents=True)
    for path in (mine, mine / ".tmp"):
        os.chown(path, 65534, 65534)


def scenarios(commands: list[str]) -> list[tuple[str, str, list[str], dict[str, str]]]:
    """(name, user, argv, env): every command, its help, its errors, as root and as nobody."""
    w = WORK
    rows: list[tuple[str, str, list[str], dict[str, str]]] = []
    for user in ("0:0", NOBODY):
        rows += [
            ("version", user, ["--version"], {}),
            ("help", user, ["--help"], {}),
            ("no-args", user, [], {}),
            ("unknown-option", user, ["apply", "--bogus"], {}),
            ("missing-spec", user, ["apply"], {}),
            ("doctor", user, ["doctor"], {}),
            ("doctor-json", user, ["doctor", "--json", "--min-free", "1M", "--path", w],
             {"TMPDIR": f"{w}/nobody-home/.tmp", "XDG_CACHE_HOME": f"{w}/nobody-home/cache", "HF_HOME": f"{w}/vol"}),
            ("doctor-bad-size", user, ["doctor", "--min-free", "lots"], {}),
            ("workers-typo", user, ["apply", "-f", f"{w}/volinit.yaml"], {"VOLINIT_WORKERS": "two"}),
        ]
        rows += [(f"help-{c}", user, [c, "--help"], {}) for c in commands]
        rows += [(f"spec-{n}", user, ["apply", "-f", f"{w}/{n}"], {}) for n in sorted(BAD_SPECS)]
    if "schema" in commands:
        rows.append(("schema", "0:0", ["schema"], {}))
    rows += [
        # as nobody: a chown it cannot do (exit 1), a volume it owns (nothing to do), a prune
        ("apply-no-chown", NOBODY, ["apply", f"{w}/vol", "--owner", "1000:1000"], {}),
        ("apply-own-volume", NOBODY, ["apply", f"{w}/nobody-home", "--owner", "65534", "--dir", ".tmp", "--json"], {}),
        ("prune-nobody", NOBODY,
         ["prune", f"{w}/prune-nobody", "--older-than", "1d", "--keep", "*.lock", "--json"], {}),
        # as root: the init container's life
        ("apply-dry-run", "0:0", ["apply", "-f", f"{w}/volinit.yaml", "--dry-run"], {}),
        ("apply", "0:0", ["apply"], {"VOLINIT_SPEC": f"{w}/volinit.yaml"}),
        ("apply-rerun-json", "0:0", ["apply", "-f", f"{w}/volinit.yaml", "--json"], {}),
        ("apply-adhoc", "0:0", ["apply", f"{w}/vol", "--owner", "1000:2000", "--chown", "always",
                                "--dir", "x/y", "--prune", "1h"], {}),
        ("apply-system-path", "0:0", ["apply", "/", "--owner", "1000"], {}),
        ("apply-forked-walk", "0:0", ["apply", f"{w}/big", "--owner", "1000", "--json"], {"VOLINIT_WORKERS": "2"}),
        ("prune-dry-run", "0:0", ["prune", f"{w}/prune-root", "--older-than", "1d", "--dry-run"], {}),
        ("prune-forked", "0:0", ["prune", f"{w}/big", "--older-than", "1d", "--json"], {"VOLINIT_WORKERS": "2"}),
        ("prune", "0:0", ["prune", f"{w}/prune-root", "--older-than", "1d", "--keep", "*.lock"], {}),
        ("prune-bad-duration", "0:0", ["prune", f"{w}/prune-root", "--older-than", "24 hours"], {}),
        ("repair-without-docker", "0:0", ["repair", "some-volume", "--owner", "1000"], {}),
        # a locale that names UTF-8 explicitly, as some hosts pass it through
        ("version-c-utf8", "0:0", ["--version"], {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}),
    ]
    return rows


# Host-side commands whose deeper imports (docker, secrets and so OpenSSL) the image never
# reaches: they stop at "the Docker SDK for Python is not installed".
HOST_SIDE = {"volinit.repair", "volinit.testing"}

NUMBER = re.compile(r"\d+(\.\d+)?")


def normalized(text: str) -> str:
    # timings and rates differ between runs; everything else must not
    return NUMBER.sub("N", text)


def run_all(volinit: str, commands: list[str], env_extra: dict[str, str]) -> dict[str, dict]:
    """Every scenario, from a fresh WORK, as its user; each run's exit code and output."""
    work = Path(WORK)
    prepare(work)
    results = {}
    for name, user, argv, env in scenarios(commands):
        key = f"{name}@{user}"
        uid, gid = (int(x) for x in user.split(":"))
        # nothing of this process's environment: PYTHONPATH must not reach the runs
        full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "COLUMNS": "80", **env_extra, **env}
        proc = subprocess.run([volinit, *argv], env=full_env, user=uid, group=gid, extra_groups=[],
                              capture_output=True, text=True, errors="replace", timeout=300, cwd="/")
        results[key] = {"code": proc.returncode, "out": proc.stdout, "err": proc.stderr}
    shutil.rmtree(work)
    return results


def trace(args: Any) -> int:
    import tempfile

    python = args.python
    info = json.loads(subprocess.run([python, "-c", (
        "import json, sys, sysconfig; print(json.dumps({'executable': sys.executable, 'prefix': sys.prefix, "
        "'base_prefix': sys.base_prefix, 'paths': sysconfig.get_paths(), "
        "'destshared': sysconfig.get_config_var('DESTSHARED')}))")],
        check=True, capture_output=True, text=True).stdout)
    commands = subprocess.run([python, "-c", (
        "import typer.main, volinit.cli; print(' '.join(sorted(typer.main.get_command(volinit.cli.app).commands)))")],
        check=True, capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as hook_dir, tempfile.TemporaryDirectory() as trace_dir:
        Path(hook_dir, "sitecustomize.py").write_text(HOOK)
        # the runs as nobody read the hook and write their trace here
        os.chmod(hook_dir, 0o755)  # noqa: S103
        os.chmod(trace_dir, 0o1777)  # noqa: S103
        env = {"PYTHONPATH": hook_dir, "VOLINIT_TRACE_DIR": trace_dir}
        results = run_all(args.volinit, commands, env)
        for key, res in results.items():
            if "Traceback" in res["err"]:
                print(f"minimal: error: scenario {key} crashed with the full install:\n{res['err']}", file=sys.stderr)
                return 1
        # Imports on paths a healthy run does not take, read from the volinit code that ran.
        used = read_traces(trace_dir)
        lazy = sorted(lazy_imports(used["modules"]))
        code = (f"import importlib\nfor m in {lazy!r}:\n"
                "    try: importlib.import_module(m)\n    except ImportError: pass\n")
        # cwd /: `python -c` puts the working dir first on sys.path, and the builder's is the
        # source tree, whose volinit/ would shadow the installed one
        subprocess.run([python, "-c", code], env={**env, "PATH": "/usr/bin:/bin"}, check=True, cwd="/")
        used = read_traces(trace_dir)
    manifest = {"info": info, "commands": commands, "lazy_imports": lazy, **used, "results": results}
    Path(args.manifest).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    print(f"minimal: traced {len(results)} runs: {len(used['modules'])} modules, {len(used['maps'])} mapped files",
          file=sys.stderr)
    return 0


def read_traces(trace_dir: str) -> dict[str, list]:
    modules: dict[str, tuple[str, str]] = {}
    maps: set[str] = set()
    opened: set[str] = set()
    for path in Path(trace_dir).iterdir():
        for line in path.read_text().splitlines():
            kind, _, rest = line.partition("\t")
            if kind == "mod":
                name, file, origin = rest.split("\t")
                if name != "sitecustomize":
                    modules[name] = (file, origin)
            elif kind == "map" and rest.startswith("/"):
                maps.add(rest)
            elif kind == "open":
                opened.add(rest)
    return {"modules": sorted([n, *v] for n, v in modules.items()), "maps": sorted(maps), "opened": sorted(opened)}


def lazy_imports(modules: list[list[str]]) -> set[str]:
    """Every module named by an import statement anywhere in the volinit modules that ran."""
    import ast
    names: set[str] = set()
    for name, file, _ in modules:
        if not (name == "volinit" or name.startswith("volinit.")) or not file.endswith(".py"):
            continue
        if name in HOST_SIDE or name.startswith("volinit.host"):
            # its other paths need the Docker SDK, which the image does not have: the
            # repair scenario checks that it still fails cleanly there
            continue
        for node in ast.walk(ast.parse(Path(file).read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from volinit import walk` imports a submodule; trying a name that is not
                # one fails harmlessly
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
    # only what is installed here: host-side extras (docker) are not the image's business
    return names


def ldd(path: str) -> list[str]:
    """The paths the dynamic loader opens for `path`, as it names them (symlinks and all)."""
    proc = subprocess.run(["ldd", path], capture_output=True, text=True)
    if proc.returncode != 0:  # "not a dynamic executable": a static binary needs nothing
        return []
    found = []
    for line in proc.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            found.append(m.group(1))
        elif "not found" in line:
            raise SystemExit(f"minimal: error: {path} needs a library the loader cannot find: {line.strip()}")
    return found


def copy_path(path: str, root: Path, done: set[str]) -> str:
    """Copy `path` into root as the loader or interpreter would reach it: every symlink on the
    way (merged /usr, /lib64, venv links) is recreated and its target copied too. Returns the
    real path."""
    parts = Path(path).parts[1:]
    current = "/"
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        if current in done:
            if os.path.islink(current):
                current = os.path.realpath(current)
            continue
        done.add(current)
        dest = root / current.lstrip("/")
        st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(current)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.is_symlink():
                dest.symlink_to(target)
            resolved = copy_path(os.path.join(os.path.dirname(current), target), root, done)
            rest = parts[i + 1:]
            return copy_path(os.path.join(resolved, *rest), root, done) if rest else resolved
        if stat.S_ISDIR(st.st_mode):
            dest.mkdir(parents=True, exist_ok=True)
            os.chmod(dest, 0o755)  # noqa: S103 - a system dir, as in the base
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(current, dest)
            os.chmod(dest, 0o755 if st.st_mode & 0o111 else 0o644)
    return os.path.normpath(current)


def is_elf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def module_source(name: str, file: str, origin: str, python: str) -> str:
    """The file behind a module; frozen ones (os, codecs, ...) are found on the stdlib path."""
    if file:
        return file
    if origin in ("frozen", "built-in") or not origin:
        if origin == "frozen":
            proc = subprocess.run([python, "-c", (
                "import importlib.machinery as m, sys; n = sys.argv[1]; "
                "s = m.PathFinder.find_spec(n) if '.' not in n else None; print(s.origin if s else '')"), name],
                capture_output=True, text=True, check=True)
            return proc.stdout.strip()
        return ""
    return origin


def assemble(args: Any) -> int:
    import py_compile

    manifest = json.loads(Path(args.manifest).read_text())
    info = manifest["info"]
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    python = info["executable"]

    for path in args.copy:
        copy_path(path, root, done)
    # the interpreter: the venv's link chain down to the real binary, and what it loads
    binaries = {copy_path(python, root, done)}
    if info["prefix"] != info["base_prefix"]:
        copy_path(os.path.join(info["prefix"], "pyvenv.cfg"), root, done)
    for path in manifest["maps"]:
        if path.startswith("/") and os.path.isfile(path) and not path.startswith(("/proc", "/dev", "/tmp")):
            binaries.add(copy_path(path, root, done))
    for binary in sorted(binaries):
        for lib in ldd(binary):
            copy_path(lib, root, done)
    # getpath() finds the platform dir by this landmark, or warns on every start
    (root / info["destshared"].lstrip("/")).mkdir(parents=True, exist_ok=True)

    # modules as bytecode only, beside where their source was (the sourceless layout);
    # unchecked-hash: nothing in it depends on a file's mtime, so the build is reproducible
    for name, file, origin in manifest["modules"]:
        src = module_source(name, file, origin, python)
        if not src:
            continue
        if src.endswith(".py"):
            dest = root / (src[:-3] + ".pyc").lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            py_compile.compile(src, cfile=str(dest), dfile=src, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            os.chmod(dest, 0o644)
        elif src.endswith(".so"):
            copy_path(src, root, done)
    # data files a run opened inside the Python installation (package metadata, say)
    installs = tuple({info["prefix"], info["base_prefix"], *info["paths"].values()})
    for path in manifest["opened"]:
        if (os.path.isfile(path) and path.startswith(installs) and not path.endswith((".py", ".pyc"))
                and "/__pycache__/" not in path):
            copy_path(path, root, done)
    # Wheels ship their extension modules with symbols (PyYAML's _yaml: 2.7 MB, 0.4 MB
    # stripped); the loader never reads them. Distribution libraries are stripped already;
    # the loader itself is left as it is.
    loaders = {os.path.realpath(p) for b in binaries for p in ldd(b) if os.path.basename(p).startswith("ld-")}
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            real = "/" + os.path.relpath(p, root)
            if not os.path.islink(p) and real not in loaders and is_elf(p):
                subprocess.run(["strip", "--strip-unneeded", p], check=True)
    # root and nobody, so that tools reading the image (and `ls -l` on a volume) name them
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                         "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    # an empty /tmp as every image has: writable only where the container is not read-only
    (root / "tmp").mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)  # noqa: S103 - what /tmp always is
    # parent dirs of everything are 0755 root; the loader's cache covers every lib dir
    lib_dirs = sorted({str(Path(p).parent) for p in done if re.match(r"lib.*\.so", os.path.basename(p))})
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "ld.so.conf").write_text("".join(d + "\n" for d in lib_dirs))
    subprocess.run(["ldconfig", "-r", str(root)], check=True)
    (root / "etc" / "ld.so.conf").unlink()
    # the smoke stage's driver and what it compares with, beside the tree (not in it)
    smoke_dir = Path(args.smoke_dir)
    smoke_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(__file__, smoke_dir / "minimal.py")
    shutil.copyfile(args.manifest, smoke_dir / "manifest.json")
    print(f"minimal: {root} holds {sum(len(f) for _, _, f in os.walk(root))} files", file=sys.stderr)
    return 0


# what the container runtime mounts or the smoke run itself uses, not the image's files
NOT_THE_TREE = ("/proc", "/sys", "/dev", "/tmp", "/smoke", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


def snapshot() -> dict[str, tuple[int, int, int, float]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk("/"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in NOT_THE_TREE]
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if p not in NOT_THE_TREE:
                st = os.lstat(p)
                found[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime)
    return found


def smoke(args: Any) -> int:
    """In a build stage whose root is the tree (the container runtime mounts /proc, which
    volinit needs), run every scenario and compare with the full install's results."""
    manifest = json.loads(Path(args.manifest).read_text())
    before = snapshot()
    results = run_all(args.volinit, manifest["commands"], {})
    failed = []
    for key, want in manifest["results"].items():
        got = results[key]
        same = got["code"] == want["code"] and all(normalized(got[s]) == normalized(want[s]) for s in ("out", "err"))
        if not same or "Traceback" in got["err"]:
            failed.append(key)
            print(f"minimal: smoke {key}: exit {got['code']} (full install: {want['code']})\n"
                  f"  stdout: {got['out'][-400:]!r}\n  stderr: {got['err'][-800:]!r}\n"
                  f"  full install's stderr: {want['err'][-400:]!r}", file=sys.stderr)
    # A module can be missing without changing any output: without yaml._yaml, PyYAML falls
    # back to its pure-Python loader, several times slower on every start.
    for name, file, _ in manifest["modules"]:
        if file.endswith((".py", ".so")):
            want = file[:-3] + ".pyc" if file.endswith(".py") else file
            if not os.path.exists(want):
                failed.append(f"module {name}")
                print(f"minimal: smoke: {name} ({want}) is not in the tree", file=sys.stderr)
    changed = sorted(set(before.items()) ^ set(snapshot().items()))
    if changed:
        failed.append("read-only")
        print(f"minimal: smoke: runs changed the image's files: {[p for p, _ in changed][:10]}", file=sys.stderr)
    version = os.environ.get("VERSION")
    if version and results["version@0:0"]["out"].strip() != f"volinit {version}":
        failed.append("version")
        print(f"minimal: smoke: the image is labelled {version}, volinit says {results['version@0:0']['out']!r}",
              file=sys.stderr)
    if failed:
        print(f"minimal: error: the image failed its smoke test: {', '.join(failed)} (each is told above; "
              f"a run that differs from the full install needs a module or library the tree lacks)",
              file=sys.stderr)
        return 1
    print(f"minimal: smoke: {len(results)} runs as root and as nobody behave as with the full install",
          file=sys.stderr)
    # the stage's root is what the image ships (COPY --from=smoke / /): the driver leaves it
    shutil.rmtree(args.smoke_dir)
    return 0


class Args:
    manifest = ""
    python = "/opt/volinit/bin/python"
    volinit = "/usr/local/bin/volinit"
    root = "/rootfs"
    smoke_dir = "/smoke"
    copy: list[str] = []


USAGE = ("usage: minimal.py trace|assemble|smoke --manifest FILE [--python PY] [--volinit PATH] "
         "[--root DIR] [--smoke-dir DIR] [--copy PATH...]")


def main(argv: list[str]) -> int:
    # by hand, not argparse: the smoke step runs on the image's own interpreter and stdlib
    if not argv or argv[0] not in ("trace", "assemble", "smoke"):
        print(USAGE, file=sys.stderr)
        return 2
    args = Args()
    args.copy = []
    key = None
    for word in argv[1:]:
        if word.startswith("--"):
            key = word[2:].replace("-", "_")
            if not hasattr(Args, key):
                print(f"minimal: error: unknown option {word}\n{USAGE}", file=sys.stderr)
                return 2
        elif key == "copy":
            args.copy.append(word)
        elif key:
            setattr(args, key, word)
            key = None
    step = {"trace": trace, "assemble": assemble, "smoke": smoke}[argv[0]]
    return step(args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
