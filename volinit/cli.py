"""The command line: parse with typer, call the engine, map errors to exit codes.

Heavy modules (yaml, docker) are imported inside the commands that need them: the init
container runs this on every `compose up`, and each import is paid at every start.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable, List, Optional

import typer

from volinit import __version__
from volinit.errors import (
    EXIT_BUG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    VolinitError,
    flag_errors,
    one_line,
)

EXIT_TERMINATED = 143
SPEC_ENV = "VOLINIT_SPEC"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="""Make mounted volumes and temp dirs usable by a non-root, read-only service.

Runs as a one-shot init container (reads /etc/volinit/volinit.yaml by default), as an
ad-hoc repair, or as a check before the service starts.

\b
Exit codes: 0 done (also "nothing to do"), 1 something could not be done, doctor or
check found problems, or fix refused, 2 usage, spec, compose or manifest error (nothing
touched), 130 interrupted, 143 terminated.
Environment: VOLINIT_SPEC (spec path for apply), VOLINIT_IMAGE (image for repair and check),
VOLINIT_WORKERS (walking processes for apply and prune; default one per CPU).

\b
Example:
  volinit apply                     # the init service: /etc/volinit/volinit.yaml
  volinit apply /app/cache --owner 1000:1000 --dir .tmp --prune 24h
  volinit check                     # a compose project, before `up`
  volinit fix                       # then: docker compose -f compose.yaml -f compose.volinit.yaml up
""",
)


class Terminated(BaseException):
    """SIGTERM arrived (docker stop): unwind, closing fds, and exit 143."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def say(line: str) -> None:
    # every info line goes through here: summaries name created dirs and skipped entries,
    # whose names are the volume users' to choose, so they are escaped like errors
    print(f"volinit: {one_line(line)}", file=sys.stderr, flush=True)


def error(line: str) -> None:
    print(f"volinit: error: {line}", file=sys.stderr, flush=True)


def run(fn: Callable[[], int]) -> None:
    """The one place exceptions become exit codes."""
    try:
        code = fn()
    except VolinitError as exc:
        error(exc.line())
        code = exc.exit_code
    except KeyboardInterrupt:
        error("interrupted; rerun to finish (the volume root is fixed last, so a rerun walks again)")
        code = EXIT_INTERRUPTED
    except Terminated:
        error("terminated; rerun to finish (the volume root is fixed last, so a rerun walks again)")
        code = EXIT_TERMINATED
    raise typer.Exit(code)


class Progress:
    """Counts for long walks: a live line on a terminal, a line every few seconds in logs."""

    def __init__(self, every: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else every
        self.start = self.last = time.monotonic()
        self.shown = False

    def __call__(self, path: str, entries: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        rate = entries / max(now - self.start, 1e-9)
        text = f"volinit: {path}: {entries} entries walked, {rate:,.0f}/s"
        if self.tty:
            sys.stderr.write(f"\r\033[K{text}")
            self.shown = True
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _version(value: bool) -> None:
    if value:
        print(f"volinit {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


@app.command("apply", short_help="Fix volume owners, create dirs, prune orphans.")
def apply_cmd(
    paths: Optional[List[str]] = typer.Argument(None, metavar="[PATH]...", show_default=False,
                                                help="Volumes to fix without a spec file (needs --owner)."),
    file: Optional[str] = typer.Option(None, "-f", "--file", metavar="SPEC",
                                       help=f"Spec file [default: ${SPEC_ENV}, else /etc/volinit/volinit.yaml]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would change; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    owner: Optional[str] = typer.Option(None, "--owner", metavar="UID[:GID]", help="Owner for PATH volumes."),
    mode: Optional[str] = typer.Option(None, "--mode", metavar="MODE", help='Mode of each PATH root, e.g. "0750".'),
    chown: str = typer.Option("on-root-mismatch", "--chown", metavar="POLICY",
                              help="on-root-mismatch (walk only when the root is wrong), always, never."),
    dirs: List[str] = typer.Option([], "--dir", metavar="REL", help="Dir to create in each PATH (repeatable)."),
    prune: Optional[str] = typer.Option(None, "--prune", metavar="DUR",
                                        help="Prune entries of each --dir older than DUR, e.g. 24h."),
) -> None:
    """Give volumes their owner and mode, create their dirs, prune old orphans.

    \b
    Example (the init service; the spec arrives as a compose config):
      volinit apply
      volinit apply -f volinit.yaml --dry-run
    Example (ad hoc, no spec file):
      volinit apply /app/cache --owner 1000:1000 --dir .tmp --prune 24h
    """
    adhoc = {"--owner": owner, "--mode": mode, "--prune": prune, "--dir": dirs or None,
             "--chown": None if chown == "on-root-mismatch" else chown}

    def go() -> int:
        from volinit import spec as specmod
        from volinit.apply import apply_spec
        from volinit.parallel import workers_from_env

        workers_from_env()  # a bad VOLINIT_WORKERS stops the run before any volume is touched
        if paths:
            if file:
                raise UsageError("-f/--file", "", "cannot be combined with PATH arguments",
                                 "use either a spec file or PATH... --owner U:G")
            spec = specmod.from_flags(list(paths), owner, mode, chown, list(dirs), prune)
        else:
            given = [k for k, v in adhoc.items() if v is not None]
            if given:
                raise UsageError(given[0], "", "only applies to PATH arguments",
                                 "name the volumes, e.g. volinit apply /data --owner 1000:1000, or put it in the spec")
            spec = specmod.load(file if file is not None else os.environ.get(SPEC_ENV) or specmod.DEFAULT_SPEC_PATH)
        progress = Progress()
        try:
            reports, errors = apply_spec(spec, dry_run=dry_run, say=say, progress=progress)
        finally:
            progress.done()
        for rep in reports:
            if rep.error is None:
                say(("dry run: " if dry_run else "") + rep.summary(dry_run))
        for exc in errors:
            error(exc.line())
        if as_json:
            doc = {"dry_run": dry_run, "ok": not errors, "volumes": [r.as_dict() for r in reports]}
            import json

            print(json.dumps(doc, indent=2))
        return EXIT_FAILED if errors else EXIT_OK

    run(go)


@app.command("prune", short_help="Remove old entries below a dir.")
def prune_cmd(
    directory: str = typer.Argument(..., metavar="DIR", help="Dir whose old entries go (never DIR itself)."),
    older_than: str = typer.Option(..., "--older-than", metavar="DUR", help="Age by mtime, e.g. 90m, 24h, 1d12h."),
    keep: List[str] = typer.Option([], "--keep", metavar="GLOB", help="Names never removed (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; remove nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Remove entries below DIR not modified for DUR: orphans of killed jobs.

    Never follows symlinks (a link goes as a link), never crosses into another
    filesystem, never removes DIR itself or a --keep match; an old directory goes
    once it is empty.

    \b
    Example:
      volinit prune /app/cache/.tmp --older-than 24h --keep '*.lock'
    """

    def go() -> int:
        from volinit import spec as specmod
        from volinit import walk
        from volinit.mounts import volume_mounts
        from volinit.parallel import workers_from_env
        from volinit.prune import prune_dir

        workers_from_env()
        with flag_errors():
            age = specmod.parse_duration(older_than, "--older-than")
            globs = specmod.parse_keep(list(keep), "--keep") if keep else ()
            path = specmod.parse_prune_dir(directory, "DIR")
        start = time.monotonic()
        fd = walk.open_volume(path)
        progress = Progress()
        try:
            res = prune_dir(fd, age, globs, dry_run=dry_run, progress=lambda n: progress(path, n),
                            mounts=volume_mounts(fd, path))
        except VolinitError as exc:
            exc.where = f"{path}/{exc.where}"  # prune names entries relative to DIR
            raise
        finally:
            progress.done()
            os.close(fd)
        verb = "would remove" if dry_run else "removed"
        skipped = f", skipped {res.skips.total} inside other mounts" if res.skips.total else ""
        say(f"{path}: {verb} {res.removed} entries ({res.bytes} bytes), kept {res.kept} by pattern{skipped}; "
            f"{time.monotonic() - start:.2f} s")
        if as_json:
            import json

            print(json.dumps({"path": path, "dry_run": dry_run, "removed": res.removed, "bytes": res.bytes,
                              "kept": res.kept, "skipped": res.skips.counts}, indent=2))
        return EXIT_OK

    run(go)


@app.command("doctor", short_help="Check temp and cache dirs as the service user.")
def doctor_cmd(
    min_free: Optional[str] = typer.Option(None, "--min-free", metavar="SIZE",
                                           help="Free space the temp dir needs, e.g. 64M, 2G."),
    paths: List[str] = typer.Option([], "--path", metavar="DIR",
                                    help="Dir whose data must outlive the container (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Check, as the service user, that temp and cache dirs will work.

    Checks the temp dir Python's tempfile would pick, each cache variable that is set
    (TMPDIR, XDG_CACHE_HOME, HF_HOME, TORCH_HOME, VOLINIT_DIRS), free space against
    --min-free, and that each --path is on a mounted volume. Exit 1 on any problem.

    \b
    Example:
      docker run --rm --user 1000:1000 --read-only -v cache:/app/cache \\
        -e TMPDIR=/app/cache/.tmp volinit doctor --min-free 2G --path /app/cache
    """

    def go() -> int:
        from volinit import doctor

        need = doctor.parse_size(min_free) if min_free is not None else None
        return doctor.run(list(paths), need, as_json)

    run(go)


@app.command("repair", short_help="Fix named Docker volumes from the host.")
def repair_cmd(
    volumes: List[str] = typer.Argument(..., metavar="VOLUME...", help="Names of Docker volumes."),
    owner: str = typer.Option(..., "--owner", metavar="UID[:GID]", help="The service's user."),
    dirs: List[str] = typer.Option([], "--dir", metavar="REL", help="Dir to create in each volume (repeatable)."),
    prune: Optional[str] = typer.Option(None, "--prune", metavar="DUR",
                                        help="Prune each --dir of entries older than DUR."),
    image: Optional[str] = typer.Option(None, "--image", metavar="IMAGE",
                                        help="volinit image [default: $VOLINIT_IMAGE, else volinit:latest]."),
    force: bool = typer.Option(False, "--force", help="Repair even while running containers use a volume, or "
                               "when a volume is a bind mount of a host directory."),
) -> None:
    """From the host, fix old volumes with the volinit image (chown: always).

    Needs the Docker SDK: pip install 'volinit[docker]'. Refuses while a running
    container has a volume mounted (it names them), or when a volume is a bind mount
    of a host directory (local driver, o=bind: it names the directory), unless --force.

    \b
    Example:
      volinit repair ocr_cache ocr_models --owner 1000:1000 --dir .tmp --prune 24h
    """

    def go() -> int:
        from volinit import repair

        return repair.run(list(volumes), owner, list(dirs), prune, image, force)

    run(go)


@app.command("check", short_help="Find temp, cache and volume incidents in a compose project.")
def check_cmd(
    files: List[str] = typer.Option([], "-f", "--file", metavar="FILE", help="Compose file (repeatable, as compose)."),
    project_directory: Optional[str] = typer.Option(None, "--project-directory", metavar="DIR",
                                                    help="Compose's project directory."),
    profiles: List[str] = typer.Option([], "--profile", metavar="P", help="Compose profile to enable (repeatable)."),
    services: List[str] = typer.Option([], "--service", metavar="NAME", help="Check only this service (repeatable)."),
    static: bool = typer.Option(False, "--static", help="Read the configuration only; run no probe container."),
    min_temp: Optional[str] = typer.Option(None, "--min-temp", metavar="SIZE",
                                           help="Temp space every service needs [default: 1G, for services "
                                                "that set a model or package cache]."),
    persist: List[str] = typer.Option([], "--persist", metavar="SERVICE:PATH",
                                      help="A dir whose data must outlive the container (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    manifests: List[str] = typer.Option([], "-k", "--manifest", metavar="MANIFEST",
                                        help="Kubernetes manifest file or dir instead of compose (repeatable)."),
) -> None:
    """Find, before `up`, where a service would die on its temp dir, caches or volumes.

    Reads the project through `docker compose config`, applies the rules below, then
    proves them with a probe in a throwaway copy of each service's container, as its
    user (no service code runs, nothing is created).

    \b
    Rules: no-temp-dir, cache-unwritable, temp-too-small, volume-not-owned,
           state-not-persistent (README: "Checking a project before it runs").

    The probe needs the Docker SDK (pip install 'volinit[docker]') and comes from
    $VOLINIT_IMAGE, else volinit:latest; --static needs neither.

    Exit 0 clean, 1 findings, 2 usage, compose or manifest error, or (without --static) no
    engine or no volinit image.

    \b
    Example:
      volinit check
      volinit check -f compose.yaml -f compose.prod.yaml --profile gpu --json
      volinit check --static --persist api:/app/media --min-temp 2G
      volinit check -k deploy/ --persist deployment/api:/data

    With -k (Kubernetes manifests: Pod, Deployment, StatefulSet, DaemonSet, Job,
    CronJob) the check is static only: no probe runs, since nothing here runs a pod as a
    kubelet would. A container is named kind/name, or kind/name/container in a pod with
    several. A -f file whose documents all have apiVersion and kind is read as -k.
    """

    def go() -> int:
        from volinit.host import check

        return check.run(check.Options(files=list(files), project_directory=project_directory,
                                       profiles=list(profiles), services=list(services), static=static,
                                       min_temp=min_temp, persist=list(persist), as_json=as_json,
                                       manifests=list(manifests)))

    run(go)


@app.command("fix", short_help="Write a compose override and spec that fix what check finds.")
def fix_cmd(
    files: List[str] = typer.Option([], "-f", "--file", metavar="FILE",
                                    help="Compose file, as for docker compose (repeatable) [default: compose's own]."),
    override: Optional[str] = typer.Option(None, "-o", "--override", metavar="OVERRIDE",
                                           help="Override to write [default: compose.volinit.yaml by the first FILE]."),
    spec_file: Optional[str] = typer.Option(None, "--spec-file", metavar="FILE",
                                            help="Spec to write [default: volinit.yaml beside the override]."),
    owners: List[str] = typer.Option([], "--owner", metavar="SERVICE=UID:GID",
                                     help="The uid:gid a service (with -k: KIND/NAME) runs as, when its image is "
                                          "not here (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print both files; write nothing."),
    manifests: List[str] = typer.Option([], "-k", "--manifest", metavar="FILE",
                                        help="Kubernetes manifests to patch instead (repeatable); -o is then OUT "
                                             "[default: stdout]."),
    kustomize: Optional[str] = typer.Option(None, "--kustomize", metavar="DIR",
                                            help="With -k: also write the change as a kustomize component in DIR."),
    image: Optional[str] = typer.Option(None, "--image", metavar="IMAGE",
                                        help="With -k: the initContainer's image "
                                             "[default: ghcr.io/volinit/volinit:0.1]."),
) -> None:
    """Write a compose override and the spec it mounts so the project's services can
    write their temp and cache dirs: a hardened volinit init service that gives each
    volume to its writer's uid, depends_on it, TMPDIR and cache variables on volumes.

    Never writes your compose files, nor a spec or override it did not write itself; a
    second run writes the same bytes. Needs `docker compose` (and the images, to learn
    their users: else pass --owner). Refuses, exit 1, what it cannot decide: an unknown
    uid, one volume written by two uids, a cache on a volume mounted read-only everywhere.

    \b
    Example:
      volinit fix -f compose.yaml
      docker compose -f compose.yaml -f compose.volinit.yaml up -d --wait
      volinit fix -f compose.yaml -f compose.prod.yaml --owner worker=1000:1000 --dry-run
    Example (Kubernetes: patched manifests plus the spec's ConfigMap, one YAML stream):
      volinit fix -k deploy/app.yaml -o deploy/app.volinit.yaml && kubectl apply -f deploy/app.volinit.yaml
      volinit fix -k deploy/app.yaml --kustomize deploy/volinit   # components: [volinit]
    """

    def go() -> int:
        from volinit.host import fix, kubefix

        if manifests and files:
            raise UsageError("-k", "", "cannot be combined with -f", "fix compose files and manifests in two runs")
        if manifests or kustomize or image or kubefix.all_manifests(list(files)):
            return kubefix.run(list(manifests or files), override, kustomize, list(owners), image, dry_run,
                               spec_file, say)
        return fix.run(list(files), override, spec_file, list(owners), dry_run, say, error)

    run(go)


@app.command("schema", short_help="Print the spec's JSON Schema.")
def schema_cmd() -> None:
    """Print the JSON Schema (draft 2020-12) of the spec file, for editors and CI.

    Specs written by `volinit fix` name it on their first line, so an editor with the
    YAML language server checks them as you type. A few rules only the loader can judge
    (a duration over 100 years, one path written twice, a name over 255 bytes): run
    `volinit apply -f SPEC --dry-run` for the final word.

    \b
    Example:
      volinit schema > volinit.schema.json
      # yaml-language-server: $schema=./volinit.schema.json   (first line of a spec)
    """

    def go() -> int:
        from volinit.spec import json_schema

        sys.stdout.write(json_schema())
        return EXIT_OK

    run(go)


def _raise_nofile_limit() -> None:
    """Lift the soft open-file limit to the hard one: the walk holds two fds per level.

    Docker's default soft limit of 1024 stops a walk about 500 levels down with EMFILE, and
    a tree that deep is cheap for the volume's user to make.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # an unlimited hard limit is refused; the soft limit then stays, and EMFILE says so


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C means "stop, exit 130" even when volinit was started with SIGINT ignored (a
    # background job of a non-interactive shell, nohup): Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _raise_nofile_limit()
    try:
        app(args=argv, prog_name="volinit")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    except Exception:  # a bug, not a user error: show everything
        import traceback

        traceback.print_exc()
        error("this is a bug in volinit; please report it with the traceback above")
        return EXIT_BUG
    return EXIT_OK
