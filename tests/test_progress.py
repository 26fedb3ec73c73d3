"""Progress for long walks: counts reach the caller, and container logs get whole lines."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from volinit import cli, prune, walk


def test_prune_reports_progress_while_it_walks(tmp_path: Path, monkeypatch) -> None:
    top = tmp_path / "tmp"
    for d in range(10):
        (top / f"job{d}").mkdir(parents=True)
        for f in range(20):
            (top / f"job{d}" / f"part{f}").write_text("x")
    monkeypatch.setattr(prune, "PROGRESS_EVERY", 16)
    seen: list[int] = []
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        prune.prune_dir(fd, 3600, progress=seen.append)
    finally:
        os.close(fd)
    assert seen == list(range(16, 211, 16))  # 210 entries: the 10 dirs and their 200 files


def test_the_chown_walk_reports_progress(tmp_path: Path, monkeypatch) -> None:
    for d in range(5):
        (tmp_path / "vol" / f"d{d}").mkdir(parents=True)
        for f in range(30):
            (tmp_path / "vol" / f"d{d}" / f"f{f}").write_text("x")
    monkeypatch.setattr(walk, "PROGRESS_EVERY", 10)
    seen: list[int] = []
    fd = walk.open_volume(str(tmp_path / "vol"))
    try:
        res = walk.chown_tree(fd, os.fstat(fd), os.getuid(), os.getgid(), workers=1, progress=seen.append)
    finally:
        os.close(fd)
    assert res.entries == 155 and seen == list(range(10, 151, 10))


def test_without_a_terminal_each_update_is_one_whole_line(capsys: pytest.CaptureFixture[str]) -> None:
    progress = cli.Progress(every=0.05)
    assert not progress.tty  # pytest captures stderr: as in `docker logs`
    progress("/data", 100)  # too soon after the start: nothing yet
    time.sleep(0.06)
    progress("/data", 5000)
    progress("/data", 5100)  # too soon after the last line
    progress.done()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("volinit: /data: 5000 entries walked, ")
    assert "\r" not in lines[0] and "\033" not in lines[0]
