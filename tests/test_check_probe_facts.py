"""How probe facts become findings, without Docker: what waits for the init or a volume not
created yet, what an empty volume will get by copy-up, and proof replacing inference."""

from __future__ import annotations

from volinit.host.probe import ProbeResult, dynamic_findings, merge
from volinit.host.workload import TMPFS, VOLUME, Finding, Mount, User, Workload

GIB = 1 << 30


def wl(**kw) -> Workload:
    base = dict(name="svc", image="img", user=User(1000, 1000), image_present=True, read_only_root=True,
                working_dir="/app", home="/home/app", home_source="passwd")
    base.update(kw)
    return Workload(**base)


def temp(*cands: tuple[str, str, bool], free: int = 10 * GIB, fstype: str = "other") -> list[dict]:
    facts = [{"fact": "id", "uid": 1000, "gid": 1000, "groups": []}]
    for how, path, ok in cands:
        facts.append({"fact": "temp", "how": how, "path": path, "ok": ok, "errno": "" if ok else "EROFS"})
        if ok:
            facts.append({"fact": "tempdir", "path": path, "free": free, "fstype": fstype})
            return facts
    facts.append({"fact": "tempdir", "path": None})
    return facts


def ids(found) -> set[tuple[str, str]]:
    return {(f.id, f.path) for f in found}


def test_no_usable_temp_dir_is_proved() -> None:
    res = ProbeResult("svc", temp(("/tmp", "/tmp", False), ("/var/tmp", "/var/tmp", False), ("cwd", "/app", False)))
    found, _ = dynamic_findings(wl(), res, min_temp=GIB, every=False)
    (f,) = found
    assert (f.id, f.source) == ("no-temp-dir", "dynamic") and "/tmp (EROFS)" in f.message


def test_tmpdir_on_a_volume_not_created_yet_waits_instead_of_failing() -> None:
    w = wl(mounts=(Mount("/data", VOLUME, "p_data", exists=False),), env=(("TMPDIR", "/data/tmp"),))
    res = ProbeResult("svc", temp(("TMPDIR", "/data/tmp", False), ("/tmp", "/tmp", False)), skipped={"/data"})
    assert dynamic_findings(w, res, min_temp=GIB, every=False) == ([], set())


def test_small_temp_space_is_proved_only_for_downloaders_unless_asked() -> None:
    facts = temp(("/tmp", "/tmp", True), free=512 << 20, fstype="tmpfs")
    assert ids(dynamic_findings(wl(), ProbeResult("svc", facts), min_temp=GIB, every=False)[0]) == set()
    hf = wl(env=(("HF_HOME", "/models"),))
    assert ids(dynamic_findings(hf, ProbeResult("svc", facts), min_temp=GIB, every=False)[0]) == {
        ("temp-too-small", "/tmp")}
    assert ids(dynamic_findings(wl(), ProbeResult("svc", facts), min_temp=GIB, every=True)[0]) == {
        ("temp-too-small", "/tmp")}


def vol_fact(**kw) -> dict:
    base = {"fact": "volume", "path": "/data", "exists": True, "uid": 0, "gid": 0, "mode": 0o755, "empty": False,
            "ok": False, "errno": "EACCES"}
    base.update(kw)
    return base


def test_root_owned_volume_is_proved_and_a_gated_one_is_left_to_its_init() -> None:
    m = Mount("/data", VOLUME, "p_data", exists=True, image_dir=True, image_owner=(1000, 1000), image_mode=0o755)
    facts = temp(("/tmp", "/tmp", True)) + [vol_fact()]
    found, _ = dynamic_findings(wl(mounts=(m,)), ProbeResult("svc", facts), min_temp=GIB, every=False)
    assert ids(found) == {("volume-not-owned", "/data")} and "root is 0:0" in found[0].message
    gated = wl(mounts=(m,), gated=True, gate="volinit", gated_volumes=("p_data",))
    assert dynamic_findings(gated, ProbeResult("svc", facts), min_temp=GIB, every=False)[0] == []


def test_an_empty_volume_is_judged_by_what_copy_up_will_give_it() -> None:
    m = Mount("/data", VOLUME, "p_data", exists=True, image_dir=True, image_owner=(1000, 1000), image_mode=0o755)
    facts = temp(("/tmp", "/tmp", True)) + [vol_fact(empty=True)]
    found, cleared = dynamic_findings(wl(mounts=(m,)), ProbeResult("svc", facts), min_temp=GIB, every=False)
    assert found == [] and ("volume-not-owned", "/data") in cleared
    nocopy = Mount("/data", VOLUME, "p_data", exists=True, image_dir=True, image_owner=(1000, 1000), no_copy=True)
    assert ids(dynamic_findings(wl(mounts=(nocopy,)), ProbeResult("svc", facts), min_temp=GIB, every=False)[0]) == {
        ("volume-not-owned", "/data")}


def test_a_cache_on_an_unowned_volume_is_one_finding_not_two() -> None:
    m = Mount("/data", VOLUME, "p_data", exists=True, image_dir=False)
    facts = temp(("/tmp", "/tmp", True)) + [
        {"fact": "cache", "var": "HF_HOME", "path": "/data/hf", "exists": False, "parent": "/data", "parent_uid": 0,
         "parent_gid": 0, "parent_mode": 0o755, "ok": False, "errno": "EACCES"}, vol_fact()]
    found, _ = dynamic_findings(wl(mounts=(m,), env=(("HF_HOME", "/data/hf"),)), ProbeResult("svc", facts),
                                min_temp=GIB, every=False)
    assert ids(found) == {("volume-not-owned", "/data")}


def test_dockers_default_home_counts_only_when_it_cannot_exist() -> None:
    def caches(home_exists: bool, home_ok: bool) -> list[dict]:
        return temp(("/tmp", "/tmp", True)) + [
            {"fact": "cache", "var": "HOME", "path": "/h", "exists": home_exists, "ok": home_ok, "errno": "EACCES"},
            {"fact": "cache", "var": "HOME/.cache", "path": "/h/.cache", "exists": False, "parent": "/",
             "parent_uid": 0, "parent_gid": 0, "parent_mode": 0o755, "ok": False, "errno": "EROFS"}]

    w = wl(home="/h", mounts=(Mount("/tmp", TMPFS),))
    assert dynamic_findings(w, ProbeResult("svc", caches(True, False)), min_temp=GIB, every=False)[0] == []
    found = dynamic_findings(w, ProbeResult("svc", caches(False, False)), min_temp=GIB, every=False)[0]
    assert ids(found) == {("cache-unwritable", "/h/.cache")}


def test_state_on_tmpfs_or_layer_is_proved() -> None:
    facts = temp(("/tmp", "/tmp", True)) + [{"fact": "persist", "path": "/tmp/x", "at": "/tmp", "fstype": "tmpfs"},
                                           {"fact": "persist", "path": "/srv", "at": "/srv", "fstype": "other"}]
    found, cleared = dynamic_findings(wl(read_only_root=False), ProbeResult("svc", facts), min_temp=GIB, every=False)
    assert ids(found) == {("state-not-persistent", "/tmp/x")} and ("state-not-persistent", "/srv") in cleared


def test_merge_prefers_proof_and_drops_what_the_probe_cleared() -> None:
    s1 = Finding("no-temp-dir", "svc", "/tmp", "m", "f")
    s2 = Finding("volume-not-owned", "svc", "/data", "m", "f")
    s3 = Finding("cache-unwritable", "svc", "/c", "m", "f")
    d1 = Finding("no-temp-dir", "svc", "/tmp", "probed", "f", "dynamic")
    out = merge([s1, s2, s3], [d1], {("volume-not-owned", "svc", "/data")})
    assert out == [s3, d1]


def test_a_probe_that_did_not_run_proves_nothing() -> None:
    assert dynamic_findings(wl(), ProbeResult("svc", error="the probe exited 127"), min_temp=GIB, every=False) == (
        [], set())
