"""Timing whole processes: wall time from spawn to reap, and the child's peak RSS."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping


class BenchError(Exception):
    """A tool failed or left the tree wrong: the run's numbers would mean nothing."""


@dataclass
class Sample:
    seconds: float
    maxrss_kb: int


# GNU time reports the peak RSS of what it runs. wait4's own figure cannot be used for a
# child of this process: the kernel records the parent's memory, shared until exec, as the
# child's high-water mark, so every tool would seem to need at least what Python does.
GNU_TIME = "/usr/bin/time"


def run_once(argv: list[str], env: Mapping[str, str] | None = None, memory: bool = False) -> Sample:
    """Run argv to completion; raise BenchError (with its stderr) unless it exits 0.

    The time covers everything a container start pays: exec, interpreter start-up, imports
    and the work. With `memory`, the run goes through GNU time for its peak RSS in KiB (the
    largest of the process and the children it reaped, forked workers included).
    """
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        cmd = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if memory else argv
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace").strip()
            raise BenchError(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
        peak = int(rss.read().split()[-1]) if memory else 0
    return Sample(seconds, peak)


def can_measure_memory() -> bool:
    return shutil.which(GNU_TIME) is not None


@dataclass
class Tool:
    """One command measured in a row: volinit or a peer."""

    name: str
    argv: list[str] | None  # None: not measured here, and `note` says why
    note: str = ""
    env: Mapping[str, str] | None = None
    prep: Callable[[], None] | None = None  # untimed, before every run
    check: Callable[[], None] | None = None  # untimed, after every run; raises BenchError
    loops: int = 1  # runs averaged into one sample, for commands of a few milliseconds
    memory: bool = False  # also record the peak RSS (through GNU time)
    samples: list[Sample] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.argv is not None

    def sample(self) -> None:
        assert self.argv is not None
        total = 0.0
        peak = 0
        for _ in range(self.loops):
            if self.prep is not None:
                self.prep()
            one = run_once(self.argv, self.env, self.memory)
            total += one.seconds
            peak = max(peak, one.maxrss_kb)
            if self.check is not None:
                self.check()
        self.samples.append(Sample(total / self.loops, peak))

    @property
    def median(self) -> float | None:
        return statistics.median(s.seconds for s in self.samples) if self.samples else None

    @property
    def peak_kb(self) -> int | None:
        return max(s.maxrss_kb for s in self.samples) if self.memory and self.samples else None

    def as_dict(self) -> dict:
        out: dict = {"name": self.name, "measured": self.measured}
        if self.argv is not None:
            out["cmd"] = " ".join(self.argv)
            out["runs_per_sample"] = self.loops
            out["median_s"] = self.median
            out["samples_s"] = [round(s.seconds, 6) for s in self.samples]
            if self.memory:
                out["peak_rss_kb"] = self.peak_kb
        if self.note:
            out["note"] = self.note
        return out


def interleave(tools: list[Tool], repeat: int) -> None:
    """Sample each measured tool `repeat` times, rotating who goes first each round.

    Rotation spreads slow drifts (another job on the machine, the page cache warming)
    over every tool instead of charging them to whoever always runs first.
    """
    live = [t for t in tools if t.measured]
    for r in range(repeat):
        shift = r % len(live) if live else 0
        for tool in live[shift:] + live[:shift]:
            tool.sample()
