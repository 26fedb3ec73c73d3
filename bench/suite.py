"""The rows of the benchmark, the order they run in, and the table they make.

Every row pits volinit against the tools people use for the same job, on the same tree,
in one run, interleaved (see runner.interleave). Times are whole processes, start-up
included: that is what a container start pays. Trees live in the page cache (they were
just built), so these are warm-cache figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import trees
from bench.runner import BenchError, Tool, can_measure_memory, interleave

REPO = Path(__file__).resolve().parent.parent
SHIM = REPO / "entrypoint" / "volinit-entrypoint"
UID = GID = 1000
OWNER = f"{UID}:{GID}"


@dataclass
class Row:
    key: str
    what: str
    volinit: Tool
    peers: list[Tool]
    targets: dict[str, float] = field(default_factory=dict)  # peer name -> max ratio

    def tools(self) -> list[Tool]:
        return [self.volinit, *self.peers]

    def as_dict(self) -> dict:
        peers = []
        mine = self.volinit.median
        for peer in self.peers:
            doc = peer.as_dict()
            theirs = peer.median
            if mine is not None and theirs:
                doc["ratio"] = mine / theirs
            target = self.targets.get(peer.name)
            if target is not None:
                doc["target_ratio"] = target
                if "ratio" in doc:
                    doc["target_met"] = doc["ratio"] <= target
            peers.append(doc)
        return {"key": self.key, "what": self.what, "volinit": self.volinit.as_dict(), "peers": peers}


def volinit_argv(*args: str) -> list[str]:
    """The console script a container runs, next to this interpreter (else -m volinit)."""
    script = Path(sys.executable).parent / "volinit"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "volinit", *args]


# --baseline REF: the same rows also time volinit as it was at REF (a git ref of this repo),
# so a change to the walk is measured against the code before it, side by side.
BASELINE: dict[str, str] = {}


def baseline_tools(argv: list[str], **kw) -> list[Tool]:
    """volinit at the baseline ref, started the way the console script starts it."""
    if not BASELINE:
        return []
    start = [sys.executable, "-c", "import sys; from volinit.cli import main; sys.exit(main())"]
    env = {**ENV, "PYTHONPATH": BASELINE["dir"]}
    return [Tool(f"volinit at {BASELINE['ref']}", [*start, *argv], env=env, **kw)]


def checkout_baseline(ref: str, base: Path) -> None:
    """The volinit package as it was at ref, with its bytecode compiled like ours."""
    import compileall

    where = base / "baseline"
    where.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "volinit"], capture_output=True)
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    compileall.compile_dir(str(where / "volinit"), quiet=1)
    BASELINE.update(ref=ref, dir=str(where))


def sh(cmd: list[str]) -> None:
    """An untimed helper command (resetting a tree); its failure stops the run."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")


# C locale for every tool: message catalogues are not what is being measured
ENV = {**os.environ, "LC_ALL": "C"}
ENV.pop("VOLINIT_SPEC", None)


def reset_root_owned(path: str):
    def reset() -> None:
        sh(["chown", "-R", "0:0", path])
        os.sync()  # the reset's writeback is not the next tool's to wait for

    return reset


def owned_by_target(path: str):
    """A check: every entry of path, root included, is OWNER (find stops at the first miss)."""

    def check() -> None:
        found = subprocess.run(["find", path, "(", "!", "-user", str(UID), "-o", "!", "-group", str(GID), ")",
                                "-print", "-quit"], capture_output=True, text=True, env=ENV)
        if found.returncode != 0 or found.stdout.strip():
            raise BenchError(f"after the run, {found.stdout.strip() or path} is not owned by {OWNER}")

    return check


def tmpfiles_tool(name: str, conf: Path, line: str, *args: str, prep=None, check=None) -> Tool:
    exe = shutil.which("systemd-tmpfiles")
    if exe is None:
        return Tool(name, None, note="not measured: systemd-tmpfiles is not installed (apt-get install systemd)")
    conf.write_text(line + "\n")
    return Tool(name, [exe, *args, str(conf)], note=f"tmpfiles.d line: {line}", env=ENV, prep=prep, check=check)


def chown_rows(base: Path, files: int, label: str) -> tuple[list[Row], list[Row]]:
    """First chown and the `always` rerun, on one tree of `files` files."""
    tree = str(base / f"chown-{label}")
    reset, owned = reset_root_owned(tree), owned_by_target(tree)
    first = Row(
        f"first_chown_{label}", f"first chown of {label} files (tree reset to 0:0 before each run, untimed)",
        Tool("volinit", volinit_argv("apply", tree, "--owner", OWNER), env=ENV, prep=reset, check=owned),
        [Tool(f"chown -R {OWNER}", ["chown", "-R", OWNER, tree], env=ENV, prep=reset, check=owned),
         tmpfiles_tool("systemd-tmpfiles --create (Z)", base / "z.conf", f"Z {tree} - {UID} {GID} -",
                       "--create", prep=reset, check=owned),
         *baseline_tools(["apply", tree, "--owner", OWNER], prep=reset, check=owned)],
        {f"chown -R {OWNER}": 1.0, "systemd-tmpfiles --create (Z)": 0.5},
    )
    always = Row(
        f"rerun_always_{label}", f"--chown always on an already-right tree of {label} files",
        Tool("volinit --chown always", volinit_argv("apply", tree, "--owner", OWNER, "--chown", "always"),
             env=ENV, check=owned),
        [Tool(f"find ! -user {UID} -exec chown",
              ["find", tree, "!", "-user", str(UID), "-exec", "chown", OWNER, "{}", "+"], env=ENV, check=owned),
         *baseline_tools(["apply", tree, "--owner", OWNER, "--chown", "always"], check=owned)],
        {f"find ! -user {UID} -exec chown": 1.0},
    )
    return [first], [always]


def big_rows(base: Path, label: str) -> list[Row]:
    """First chown (peak memory) and the default-policy rerun, on the big tree."""
    tree = str(base / f"chown-{label}")
    reset, owned = reset_root_owned(tree), owned_by_target(tree)
    memory = can_measure_memory()
    first = Row(
        f"first_chown_{label}", f"first chown of {label} files (tree reset to 0:0 before each run, untimed)",
        Tool("volinit", volinit_argv("apply", tree, "--owner", OWNER), env=ENV, prep=reset, check=owned,
             memory=memory),
        [Tool(f"chown -R {OWNER}", ["chown", "-R", OWNER, tree], env=ENV, prep=reset, check=owned, memory=memory),
         *baseline_tools(["apply", tree, "--owner", OWNER], prep=reset, check=owned, memory=memory)],
    )
    # The two short runs sync first, so neither pays for the writeback of chown -R's million
    # changed inodes, and average 5 starts per sample: they last about 80 ms.
    rerun = Row(
        f"rerun_default_{label}", f"rerun, default policy (on-root-mismatch), already-right tree of {label} files",
        Tool("volinit", volinit_argv("apply", tree, "--owner", OWNER), env=ENV, prep=os.sync, loops=5),
        [Tool("volinit --version (start-up alone)", volinit_argv("--version"), env=ENV, prep=os.sync, loops=5),
         Tool(f"chown -R {OWNER}", ["chown", "-R", OWNER, tree], env=ENV, check=owned),
         *baseline_tools(["apply", tree, "--owner", OWNER], prep=os.sync, loops=5)],
        {"volinit --version (start-up alone)": 1.3},
    )
    return [first, rerun]


def prune_row(base: Path, entries: int, label: str) -> Row:
    tree = str(base / f"prune-{label}")
    info: dict[str, int] = {}

    def fresh_tree() -> None:
        if os.path.lexists(tree):
            shutil.rmtree(tree)
        built = trees.build_prune_tree(tree, entries)
        info["expect"] = built.entries - built.old
        os.sync()  # the build's writeback is not the next tool's to wait for

    def pruned() -> None:
        left = trees.count_entries(tree)
        if left != info["expect"]:
            raise BenchError(f"after the prune, {left} entries are left in {tree}; expected {info['expect']}")

    return Row(
        f"prune_{label}", f"prune {label} entries, half 3 days old (tree rebuilt before each run, untimed)",
        Tool("volinit prune --older-than 24h", volinit_argv("prune", tree, "--older-than", "24h"),
             env=ENV, prep=fresh_tree, check=pruned),
        [Tool("find -mindepth 1 -mmin +1440 -delete", ["find", tree, "-mindepth", "1", "-mmin", "+1440", "-delete"],
              env=ENV, prep=fresh_tree, check=pruned),
         tmpfiles_tool("systemd-tmpfiles --clean (e, mM:1d)", base / "e.conf", f"e {tree} - - - mM:1d",
                       "--clean", prep=fresh_tree, check=pruned),
         *baseline_tools(["prune", tree, "--older-than", "24h"], prep=fresh_tree, check=pruned)],
        {"find -mindepth 1 -mmin +1440 -delete": 1.0},
    )


def shim_row(base: Path, loops: int) -> Row:
    env = {**ENV, "TMPDIR": str(base / "shim" / "tmp"), "XDG_CACHE_HOME": str(base / "shim" / "cache")}
    dash = shutil.which("dash")
    peer = Tool("sh -c 'mkdir -p ... && exec true'",
                [dash or "sh", "-c", 'mkdir -p "$TMPDIR" "$XDG_CACHE_HOME" && exec true'], env=env, loops=loops)
    if not SHIM.exists():
        mine = Tool("volinit-entrypoint true", None, note=f"not measured: {SHIM.relative_to(REPO)} does not exist yet")
    elif dash is None:
        mine = Tool("volinit-entrypoint true", None, note="not measured: dash is not installed (apt-get install dash)")
    else:
        mine = Tool("volinit-entrypoint true (dash)", [dash, str(SHIM), "true"], env=env, loops=loops,
                    note="TMPDIR and XDG_CACHE_HOME set; the dirs exist after the first run")
    return Row("shim", f"the entrypoint shim, TMPDIR and XDG_CACHE_HOME set (mean of {loops} starts per sample)",
               mine, [peer], {peer.name: 1.5})


def startup_row(loops: int) -> Row:
    return Row(
        "startup", f"start-up (mean of {loops} starts per sample)",
        Tool("volinit --version", volinit_argv("--version"), env=ENV, loops=loops),
        [Tool("python -c 'import typer, yaml'", [sys.executable, "-c", "import typer, yaml"], env=ENV, loops=loops)],
        {"python -c 'import typer, yaml'": 1.5},
    )


def label_of(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def table(rows: list[Row], memory: dict | None) -> str:
    lines = ["| measurement | volinit | peer | peer time | ratio | target |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        doc = row.as_dict()
        for i, peer in enumerate(doc["peers"]):
            what = row.what if i == 0 else ""
            mine = fmt_s(row.volinit.median) if i == 0 else ""
            if not row.volinit.measured and i == 0:
                mine = row.volinit.note
            ratio = f"{peer['ratio']:.2f}x" if "ratio" in peer else "-"
            target = "-"
            if "target_ratio" in peer:
                verdict = "" if "target_met" not in peer else (" met" if peer["target_met"] else " **missed**")
                target = f"<= {peer['target_ratio']:.1f}x{verdict}"
            theirs = fmt_s(peer.get("median_s")) if peer["measured"] else peer["note"]
            lines.append(f"| {what} | {mine} | {peer['name']} | {theirs} | {ratio} | {target} |")
    if memory is not None and memory["volinit_mb"] is None:
        lines.append(f"| {memory['what']} | not measured | - | - | - | <= {memory['target_mb']} MB |")
    elif memory is not None:
        verdict = "met" if memory["volinit_mb"] <= memory["target_mb"] else "**missed**"
        peer_mb = f"{memory['peer_mb']:.1f} MB" if memory.get("peer_mb") is not None else "-"
        lines.append(f"| {memory['what']} | {memory['volinit_mb']:.1f} MB | {memory['peer']} | {peer_mb} | - | "
                     f"<= {memory['target_mb']} MB {verdict} |")
    return "\n".join(lines)


def memory_of(row: Row | None) -> dict | None:
    if row is None:
        return None
    if row.volinit.peak_kb is None:
        return {"what": "peak RSS: not measured (/usr/bin/time is not installed: apt-get install time)",
                "volinit_mb": None, "peer": "-", "peer_mb": None, "target_mb": 64}
    peer = row.peers[0]
    return {"what": f"peak RSS, {row.what.split(' (')[0]} (largest process)",
            "volinit_mb": row.volinit.peak_kb / 1024, "peer": peer.name,
            "peer_mb": peer.peak_kb / 1024 if peer.peak_kb is not None else None, "target_mb": 64}


def compile_volinit() -> str:
    """Compile volinit's bytecode, as the image does at build time.

    A container never compiles at start (its image ships the .pyc files), but a source
    checkout run with PYTHONDONTWRITEBYTECODE would recompile every module on every start,
    and that is not what a user pays.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("volinit")
    if spec is None or spec.origin is None:
        raise BenchError("volinit is not importable by this interpreter; install the project first")
    package = os.path.dirname(spec.origin)
    compileall.compile_dir(package, quiet=1)
    return package


def machine() -> dict:
    tmpfiles = shutil.which("systemd-tmpfiles")
    version = ""
    if tmpfiles:
        out = subprocess.run([tmpfiles, "--version"], capture_output=True, text=True).stdout
        version = out.splitlines()[0] if out else ""
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "systemd_tmpfiles": version or None, "loadavg_start": os.getloadavg()}


def chown_tree(base: Path, files: int, label: str, reuse: bool, say) -> None:
    """Build the chown tree of `files` files, or with `reuse` find it from an earlier run."""
    tree = base / f"chown-{label}"
    manifest = base / f"chown-{label}.json"
    if reuse and tree.is_dir() and manifest.exists():
        say(f"reusing the tree of {label} files in {tree}")
        return
    if tree.exists():
        shutil.rmtree(tree)
    say(f"building a tree of {label} files")
    built = trees.build_chown_tree(str(tree), files)
    say(f"  {built.files} files, {built.links} symlinks, {built.dirs} dirs")
    manifest.write_text(json.dumps(vars(built)) + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--files", type=int, default=200_000, help="files in the first-chown and always-rerun tree")
    ap.add_argument("--big", type=int, default=1_000_000, help="files in the default-rerun and peak-memory tree")
    ap.add_argument("--prune", type=int, default=100_000, help="entries in the prune tree, half of them old")
    ap.add_argument("--repeat", type=int, default=5, help="samples per tool (the table shows medians)")
    ap.add_argument("--starts", type=int, default=20, help="process starts averaged into one shim/start-up sample")
    ap.add_argument("--dir", default=None, help="where to build the trees [default: the temp dir]")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the chown trees in --dir after the run and reuse them next time (they take minutes "
                         "to build on a slow filesystem); needs --dir")
    ap.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                    help="also write the results as JSON to FILE (- or no FILE: stdout, table to stderr)")
    ap.add_argument("--only", default=None, metavar="KEYS",
                    help="comma-separated subset: first,always,big,prune,shim,startup")
    ap.add_argument("--baseline", default=None, metavar="REF",
                    help="also time volinit as it was at this git ref (e.g. HEAD~3, main) in the same rows")
    ap.add_argument("--quick", action="store_true",
                    help="a small smoke run for CI: 2000/5000 files, 2000 prune entries, 1 repeat, 3 starts")
    args = ap.parse_args(argv)
    if args.reuse and not args.dir:
        ap.error("--reuse needs --dir")
    if args.quick:
        args.files, args.big, args.prune, args.repeat, args.starts = 2000, 5000, 2000, 1, 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: error: must run as root (chown to other owners)", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else {"first", "always", "big", "prune", "shim", "startup"}
    to_json_stdout = args.json == "-"
    out = sys.stderr if to_json_stdout else sys.stdout

    def say(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    if args.reuse:
        base = Path(args.dir).resolve()
        base.mkdir(parents=True, exist_ok=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="volinit-bench.", dir=args.dir))
    rows: list[Row] = []
    big_first: Row | None = None
    started = time.monotonic()
    info = machine()
    try:
        info["volinit_package"] = compile_volinit()
        info["bytecode"] = "compiled before measuring, as the image does"
        if args.baseline:
            checkout_baseline(args.baseline, base)
            info["baseline"] = args.baseline
        if only & {"first", "always"}:
            label = label_of(args.files)
            chown_tree(base, args.files, label, args.reuse, say)
            first, always = chown_rows(base, args.files, label)
            if "first" in only:
                say("first chown")
                interleave(first[0].tools(), args.repeat)
                rows += first
            if "always" in only:
                sh(["chown", "-R", OWNER, str(base / f"chown-{label}")])  # already right, whatever ran before
                say("--chown always rerun")
                interleave(always[0].tools(), args.repeat)
                rows += always
            if not args.reuse:
                shutil.rmtree(base / f"chown-{label}")
        if "big" in only:
            label = label_of(args.big)
            chown_tree(base, args.big, label, args.reuse, say)
            big_first, rerun = big_rows(base, label)
            say("first chown, big tree")
            interleave(big_first.tools(), args.repeat)
            say("default-policy rerun")
            interleave(rerun.tools(), args.repeat)
            rows += [big_first, rerun]
            if not args.reuse:
                shutil.rmtree(base / f"chown-{label}")
        if "prune" in only:
            say(f"prune of {label_of(args.prune)} entries")
            row = prune_row(base, args.prune, label_of(args.prune))
            interleave(row.tools(), args.repeat)
            rows.append(row)
        if "shim" in only:
            say("shim")
            row = shim_row(base, args.starts)
            interleave(row.tools(), args.repeat)
            rows.append(row)
        if "startup" in only:
            say("start-up")
            row = startup_row(args.starts)
            interleave(row.tools(), args.repeat)
            rows.append(row)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.reuse:
            shutil.rmtree(base / f"prune-{label_of(args.prune)}", ignore_errors=True)
        else:
            shutil.rmtree(base, ignore_errors=True)

    info["loadavg_end"] = os.getloadavg()
    memory = memory_of(big_first)
    print(table(rows, memory), file=out)
    print(f"\n{args.repeat} samples per cell, medians; whole-process times; warm page cache; "
          f"{info['cpus']} CPUs, load average {info['loadavg_start'][0]:.2f} at start, "
          f"{info['loadavg_end'][0]:.2f} at end; {time.monotonic() - started:.0f} s in all.", file=out)
    if args.json is not None:
        doc = {"machine": info, "params": {k: getattr(args, k) for k in ("files", "big", "prune", "repeat", "starts")},
               "owner": OWNER, "rows": [r.as_dict() for r in rows], "memory": memory}
        text = json.dumps(doc, indent=2)
        if to_json_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0
