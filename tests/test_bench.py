"""The benchmark harness runs end to end on a small tree (ratios are reported, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

ROWS = ("first_chown_2k", "rerun_always_2k", "first_chown_5k", "rerun_default_5k", "prune_2k", "shim", "startup")


@pytest.fixture(scope="module")
def quick(as_root: None) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| measurement |" in done.stderr  # the table goes to stderr when JSON has stdout
    return json.loads(done.stdout)


def test_every_row_is_there(quick: dict) -> None:
    assert [row["key"] for row in quick["rows"]] == list(ROWS)


@pytest.mark.parametrize("key", ROWS)
def test_every_measured_tool_has_positive_times(quick: dict, key: str) -> None:
    row = next(r for r in quick["rows"] if r["key"] == key)
    for tool in [row["volinit"], *row["peers"]]:
        if not tool["measured"]:
            # only a peer missing from this machine may be left out, and it says so
            assert tool["note"].startswith("not measured: "), tool
            continue
        assert tool["median_s"] > 0, tool
        assert tool["samples_s"] and all(s > 0 for s in tool["samples_s"]), tool
    assert row["volinit"]["measured"] or key == "shim", row


def test_ratios_have_their_targets(quick: dict) -> None:
    targets = {(r["key"], p["name"]): p.get("target_ratio") for r in quick["rows"] for p in r["peers"]}
    assert targets[("first_chown_2k", "chown -R 1000:1000")] == 1.0
    assert targets[("rerun_default_5k", "volinit --version (start-up alone)")] == 1.3
    assert targets[("startup", "python -c 'import typer, yaml'")] == 1.5
    for row in quick["rows"]:
        for peer in row["peers"]:
            if "ratio" in peer:
                assert peer["ratio"] > 0


def test_peak_memory_is_reported(quick: dict) -> None:
    memory = quick["memory"]
    assert memory["target_mb"] == 64
    if memory["volinit_mb"] is None:
        assert "not measured" in memory["what"]
    else:
        assert memory["volinit_mb"] > 0



def test_a_baseline_ref_is_timed_beside_the_working_tree(as_root: None) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "first,prune", "--baseline", "HEAD",
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["machine"]["baseline"] == "HEAD"
    for row in doc["rows"]:
        [old] = [p for p in row["peers"] if p["name"] == "volinit at HEAD"]
        assert old["measured"] and old["median_s"] > 0 and old["ratio"] > 0
    bad = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "prune", "--baseline", "no-such-ref"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "bench: error: git archive no-such-ref" in bad.stderr
