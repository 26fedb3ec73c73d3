"""Forked workers for big walks: both cores when a volume holds hundreds of thousands of entries.

`walk_tree` runs a walk (chown or prune, a walk.Traversal) over a whole tree: the parent
walks the top breadth first, alone, until it has seen PARALLEL_AFTER entries; if the tree
goes on, workers take the subtrees it has opened so far; last, the parent leaves the top
dirs it opened, deepest first (prune removes those found old and empty).

A walk spends its time in two places, the kernel (a stat and a chown per entry) and Python
(the objects wrapped around each one); one process keeps one core busy. The parent lists
the top of the tree itself, then forks workers that inherit the already opened, already
verified directory fds and take them, one whole subtree at a time, from a shared queue.
Nothing is reopened by name, so a worker sees exactly the inodes the parent checked.

The queue is a pipe holding 4-byte task numbers, written before the fork: a read of 4
bytes from a pipe is atomic, so each task goes to exactly one worker, and the fastest
worker takes the most. A worker's tallies come back through a pipe of its own, as one
marshal record written when it is done.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import sys
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Sequence

from volinit.errors import OperationError, UsageError

if TYPE_CHECKING:
    from volinit.walk import Traversal

MAX_WORKERS = 8
TASK_BYTES = 4
WORKERS_ENV = "VOLINIT_WORKERS"
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}  # what stops a run: docker stop, Ctrl-C
# Below this many entries, forking costs more than it saves. Deleting waits on the
# filesystem's journal more than on the CPU, and two processes overlap those waits too.
PARALLEL_AFTER = 5000
MAX_TASKS = 4096  # top dirs kept open for the workers at most (fds); past it they are walked in place
SEED_LEVELS = 6  # levels below the root whose dirs the parent hands out


def default_workers() -> int:
    """Workers worth forking here: usable CPUs, under a cgroup's CPU quota, or VOLINIT_WORKERS."""
    wanted = workers_from_env()
    if wanted is not None:
        return wanted
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        # cgroup v2: "max 100000" or "150000 100000" (docker run --cpus=1.5)
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, min(cpus, MAX_WORKERS))


def workers_from_env() -> int | None:
    """VOLINIT_WORKERS as a count (at most MAX_WORKERS), or None when unset or empty.

    Checked before anything touches a volume: a typo is a usage error, not a silent default.
    """
    wanted = os.environ.get(WORKERS_ENV, "").strip()
    if not wanted:
        return None
    digits = wanted.lstrip("0")
    if not (wanted.isascii() and wanted.isdigit() and digits):
        raise UsageError(WORKERS_ENV, "", f"{wanted!r} is not a positive whole number",
                         "set it to the number of walking processes, e.g. 2, or unset it for one per CPU")
    return MAX_WORKERS if len(digits) > 3 else min(int(digits), MAX_WORKERS)


class NoWorkers(Exception):
    """Not even one worker could be forked; the caller does the work itself."""


class Pool:
    """Run `work(task)` for every task in `workers` forked processes; gather their results.

    `work` raises OperationError for what the user must hear about; the first one is
    raised in the parent once every worker has stopped (the others are stopped early).
    `result()` runs in each worker after its last task and must return marshal-able data.
    `progress(total)` is called in the parent about once a second with `done_before` plus
    the sum of what the workers last published through `publish(n)`.
    """

    def __init__(self, workers: int, work: Callable[[Any], None], result: Callable[[], Any],
                 progress: Callable[[int], None] | None = None, done_before: int = 0) -> None:
        self.workers = workers
        self.work = work
        self.result = result
        self.progress = progress
        self.done_before = done_before  # counted by the parent before the workers started
        self.counters: Any = None  # shared memory, one 8-byte slot per worker
        self.slot = -1
        self.parent = os.getpid()

    def publish(self, done: int) -> None:
        """In a worker: make `done` visible to the parent's progress line; stop if orphaned."""
        if os.getppid() != self.parent:
            # the parent was killed (kill -9): the root stays unfixed, so stop walking too
            os._exit(1)
        if self.counters is not None:
            self.counters[self.slot * 8:(self.slot + 1) * 8] = done.to_bytes(8, "little")

    def run(self, tasks: Sequence[Any]) -> list[Any]:
        if self.progress is not None:
            import mmap

            self.counters = mmap.mmap(-1, 8 * self.workers)
        try:
            queue_r, queue_w = os.pipe()
        except OSError:  # out of fds (EMFILE): the caller walks alone, with what it has
            raise NoWorkers() from None
        try:
            # all at once, before the fork: the pipe's 64 KiB hold 16k tasks (callers send fewer)
            os.write(queue_w, b"".join(i.to_bytes(TASK_BYTES, "little") for i in range(len(tasks))))
        finally:
            os.close(queue_w)  # so a worker's read finds EOF once the queue is empty
        sys.stdout.flush()
        sys.stderr.flush()
        running: dict[int, int] = {}  # result pipe -> pid
        try:
            # SIGTERM and SIGINT wait until every worker is forked and recorded: a worker
            # stopped while still in Python's after-fork code would run our handler there
            # (a traceback in the container's log), and one forked just before our handler
            # raised would be left unrecorded, unstopped.
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                for slot in range(self.workers):
                    try:
                        res_r, res_w = os.pipe()
                    except OSError:  # out of fds: the workers already running share the queue
                        if not running:
                            raise NoWorkers() from None
                        break
                    try:
                        pid = os.fork()
                    except OSError:  # a pids limit, say: the workers already running share the queue
                        os.close(res_r)
                        os.close(res_w)
                        if not running:
                            raise NoWorkers() from None
                        break
                    if pid == 0:  # the worker; it never returns
                        os.close(res_r)
                        self._worker(slot, tasks, queue_r, res_w, unblocked)
                    os.close(res_w)
                    running[res_r] = pid
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            os.close(queue_r)
            queue_r = -1
            return self._gather(running)
        finally:
            if queue_r >= 0:
                os.close(queue_r)
            for fd, pid in running.items():  # only after an exception: stop and reap the rest
                _stop(pid)
                os.close(fd)

    def _worker(self, slot: int, tasks: Sequence[Any], queue: int, out: int, unblocked: set) -> None:
        # Ctrl-C reaches the whole process group and docker stop's SIGTERM reaches the
        # parent, which then stops us: either way, simply die.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        self.slot = slot
        code = 0
        try:
            while True:
                raw = os.read(queue, TASK_BYTES)
                if not raw:
                    break
                self.work(tasks[int.from_bytes(raw, "little")])
            record: tuple = ("ok", self.result())
        except OperationError as exc:
            record, code = ("error", (exc.what, exc.where, exc.why, exc.fix)), 1
        except BaseException as exc:  # a bug: the parent reports it as one
            record, code = ("bug", f"{type(exc).__name__}: {exc}"), 3
        try:
            os.write(out, marshal.dumps(record))
        finally:
            os._exit(code)  # no atexit handlers, no second flush of the parent's buffers

    def _gather(self, running: dict[int, int]) -> list[Any]:
        chunks: dict[int, list[bytes]] = {fd: [] for fd in running}
        results: list[Any] = []
        failure: OperationError | None = None
        # poll, not select: the subtrees' fds push these pipes past select's limit of 1024
        poller = select.poll()
        for fd in running:
            poller.register(fd, select.POLLIN)
        while running:
            ready = poller.poll(1000)
            if not ready and self.progress is not None and self.counters is not None:
                counts = self.counters[:]
                published = sum(int.from_bytes(counts[i:i + 8], "little") for i in range(0, len(counts), 8))
                self.progress(self.done_before + published)
            for fd, _ in ready:
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                    continue
                poller.unregister(fd)
                pid = running.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                problem = _outcome(b"".join(chunks[fd]), status, results)
                if problem is not None and failure is None:
                    failure = problem
                    for other in running.values():  # fail fast: the run fails anyway
                        os.kill(other, signal.SIGTERM)
        if failure is not None:
            raise failure
        return results


def _outcome(raw: bytes, status: int, results: list[Any]) -> OperationError | None:
    """Add a finished worker's result to results, or say why the run fails."""
    try:
        # written by our own fork into a pipe only it and we hold: as trusted as our memory
        kind, value = marshal.loads(raw)  # noqa: S302
    except (EOFError, ValueError, TypeError):
        code = os.waitstatus_to_exitcode(status)
        why = f"died of signal {-code}" if code < 0 else f"exited {code} without a result"
        return OperationError("walk worker", "", why, "rerun; the volume root is fixed last, so a rerun walks again")
    if kind == "ok":
        results.append(value)
        return None
    if kind == "error":
        return OperationError(*value)
    raise RuntimeError(f"walk worker: {value}")  # a bug: cli.main shows it with exit 3


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


class _Node:
    """A dir the parent opened while walking the top: walked by it or by a worker, then left."""

    __slots__ = ("fd", "path", "name", "parent", "depth", "left", "old")

    def __init__(self, fd: int, path: str, name: str, parent: int, depth: int) -> None:
        self.fd, self.path, self.name, self.parent, self.depth = fd, path, name, parent, depth
        self.left = 0
        self.old = False


def walk_tree(trav: Traversal, root_fd: int, workers: int | None = None,
              parallel_after: int | None = None) -> None:
    """Walk everything below root_fd with `trav`, in `workers` processes when it is big."""
    if workers is None:
        workers = default_workers()
    if parallel_after is None:
        parallel_after = PARALLEL_AFTER
    if workers < 2:
        trav.walk(root_fd, "")
        return
    import resource

    from volinit.walk import Level

    # the pending subtrees hold an fd each: stay well inside the open-file limit
    cap = max(4 * workers, min(MAX_TASKS, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4))
    nodes = [_Node(os.dup(root_fd), "", "", -1, 0)]
    queue = deque([0])  # nodes whose contents are not walked yet
    try:
        # breadth first, so the subtrees left when the parent stops are many and alike in size
        while queue and (trav.seen < parallel_after or len(queue) < 2 * workers):
            i = queue.popleft()
            found: list = []
            # only the top few levels are handed out: below them a tree is a task's own
            # (a chain thousands deep would otherwise be opened level by level, its paths kept)
            trav.room = cap - len(nodes) if nodes[i].depth < SEED_LEVELS else 0
            nodes[i].left = trav.walk(nodes[i].fd, nodes[i].path, collect=found)
            for fd, path, name, st in found:
                node = _Node(fd, path, name, i, nodes[i].depth + 1)
                node.old = trav.is_old(st)
                nodes.append(node)
                queue.append(len(nodes) - 1)
        if queue:
            _in_workers(trav, nodes, list(queue), workers)
        # leave the top dirs deepest first: a child before its parent
        for node in reversed(nodes[1:]):
            parent = nodes[node.parent]
            lvl = Level(node.fd, node.name, 0, 0, True)
            lvl.old, lvl.left = node.old, node.left
            up = Level(parent.fd, parent.name, 0, 0, True)
            up.left = parent.left
            trav.base = node.path.rpartition("/")[0]
            os.close(node.fd)  # before leave, as in Traversal.walk
            node.fd = lvl.fd = -1
            trav.leave(lvl, up)
            parent.left = up.left
    finally:
        for node in nodes:
            if node.fd >= 0:
                os.close(node.fd)


def _in_workers(trav: Traversal, nodes: list[_Node], tasks: list[int], workers: int) -> None:
    """Walk below each task's dir in forked workers; add up their tallies and entries left."""
    progress = trav.progress
    done_before = trav.seen
    lefts: list[tuple[int, int]] = []

    def work(i: int) -> None:
        lefts.append((i, trav.walk(nodes[i].fd, nodes[i].path)))

    def result() -> tuple:
        return trav.record(), lefts

    pool = Pool(min(workers, len(tasks)), work, result, progress, done_before)
    saved = trav.save()
    trav.reset()  # each worker counts from nothing
    trav.progress = pool.publish
    results: list | None
    try:
        results = pool.run(tasks)
    except NoWorkers:
        results = None
    finally:
        trav.restore(saved)
        trav.progress = progress
    if results is None:  # no fork allowed here (a pids limit): walk them all in this process
        for i in tasks:
            nodes[i].left = trav.walk(nodes[i].fd, nodes[i].path)
        return
    for record, worker_lefts in results:
        trav.merge(record)
        for i, left in worker_lefts:
            nodes[i].left = left
