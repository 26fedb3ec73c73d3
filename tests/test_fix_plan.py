"""The fix planner on workloads built by hand: what it changes, what it refuses, and that the
same input always gives the same plan. No compose, no Docker."""

from __future__ import annotations

import dataclasses
import random

import pytest

from volinit.host import plan as planmod
from volinit.host.plan import DirPlan, FixPlan, plan
from volinit.host.workload import (
    CACHE_UNWRITABLE,
    NO_TEMP_DIR,
    STATE_NOT_PERSISTENT,
    TEMP_TOO_SMALL,
    TMPFS,
    VOLUME,
    VOLUME_NOT_OWNED,
    Finding,
    Mount,
    User,
    Workload,
)
from volinit.spec import Owner

U1000 = User(1000, 1000, "compose user:")
UNKNOWN = User(None, unknown_why="image my/app:1 is not present locally")


def finding(rule: str, service: str, path: str) -> Finding:
    return Finding(rule, service, path, "message", "fix")


def ocr() -> Workload:
    """Seed 003: uid 1000, read-only, a 512 MB /tmp tmpfs, two cache volumes older than the user."""
    return Workload(
        name="ocr-service", image="ocr:1", user=U1000, read_only_root=True,
        mounts=(Mount("/tmp", TMPFS, size=512 * 2**20), Mount("/app/cache", VOLUME, "ocr-cache"),
                Mount("/app/models", VOLUME, "ocr-models")),
        env=(("HF_HOME", "/app/cache"), ("TORCH_HOME", "/app/models/torch"), ("XDG_CACHE_HOME", "/app/cache")),
    )


OCR_FINDINGS = [finding(VOLUME_NOT_OWNED, "ocr-service", "/app/cache"),
                finding(VOLUME_NOT_OWNED, "ocr-service", "/app/models"),
                finding(TEMP_TOO_SMALL, "ocr-service", "/tmp")]


def test_seed_003_temp_goes_to_the_cache_volume_and_both_volumes_are_owned() -> None:
    p = plan([ocr()], OCR_FINDINGS)
    assert not p.refusals
    assert [(v.source, v.owner, v.dirs, v.role) for v in p.volumes] == [
        ("ocr-cache", Owner(1000, 1000), (DirPlan(".tmp", 0o700, "24h"),), "existing"),
        ("ocr-models", Owner(1000, 1000), (DirPlan("torch"),), "existing"),  # TORCH_HOME
    ]
    (w,) = p.workloads
    assert (w.name, w.env, w.mounts, w.gated) == ("ocr-service", (("TMPDIR", "/app/cache/.tmp"),), (), True)


def test_seed_000_read_only_service_with_no_volume_gets_its_own_volume_at_tmp() -> None:
    web = Workload(name="web", user=U1000, read_only_root=True)
    p = plan([web], [finding(NO_TEMP_DIR, "web", "/tmp")])
    (vol,) = p.volumes
    assert (vol.source, vol.owner, vol.mode, vol.role) == ("volinit-web", Owner(1000, 1000), 0o1777, "scratch")
    assert vol.dirs == (DirPlan(".tmp", 0o700, "24h"),)
    (w,) = p.workloads
    assert w.mounts == (Mount("/tmp", VOLUME, "volinit-web"),)
    assert w.env == (("TMPDIR", "/tmp/.tmp"),) and w.gated


def test_a_small_tmpfs_at_tmp_moves_the_new_volume_to_var_tmp() -> None:
    svc = Workload(name="svc", user=U1000, read_only_root=True, mounts=(Mount("/tmp", TMPFS, size=2**20),))
    p = plan([svc], [finding(TEMP_TOO_SMALL, "svc", "/tmp")])
    (w,) = p.workloads
    assert w.mounts == (Mount("/var/tmp", VOLUME, "volinit-svc"),)
    assert w.env == (("TMPDIR", "/var/tmp/.tmp"),)


def test_seed_002_cache_under_home_and_temp_share_one_new_volume() -> None:
    reports = Workload(name="reports", user=U1000, read_only_root=True, home="/home/app",
                       env=(("HOME", "/home/app"),))
    p = plan([reports], [finding(CACHE_UNWRITABLE, "reports", "/home/app/.cache"),
                         finding(NO_TEMP_DIR, "reports", "/tmp")])
    (vol,) = p.volumes
    assert [d.path for d in vol.dirs] == [".cache", ".tmp"]
    (w,) = p.workloads
    assert w.env == (("TMPDIR", "/tmp/.tmp"), ("XDG_CACHE_HOME", "/tmp/.cache"))
    assert len(w.mounts) == 1


def test_a_cache_variable_on_the_read_only_root_moves_into_the_service_volume() -> None:
    svc = Workload(name="svc", user=U1000, read_only_root=True,
                   mounts=(Mount("/data", VOLUME, "data"),),
                   env=(("HF_HOME", "/usr/local/lib/python3.12/site-packages/x/.cache"),))
    p = plan([svc], [finding(CACHE_UNWRITABLE, "svc", "/usr/local/lib/python3.12/site-packages/x/.cache")])
    (w,) = p.workloads
    assert w.env == (("HF_HOME", "/data/.cache/huggingface"),) and w.mounts == () and w.gated
    assert p.volumes[0].dirs == (DirPlan(".cache/huggingface"),)


def test_a_cache_dir_inside_an_unowned_volume_is_created_there() -> None:
    svc = Workload(name="svc", user=U1000, mounts=(Mount("/app/cache", VOLUME, "cache"),),
                   env=(("XDG_CACHE_HOME", "/app/cache/xdg"),))
    p = plan([svc], [finding(CACHE_UNWRITABLE, "svc", "/app/cache/xdg")])
    assert p.volumes[0].dirs == (DirPlan("xdg"),)
    assert p.workloads[0].env == ()  # the variable already points into the volume


def test_an_existing_tmpdir_on_a_volume_is_kept_and_created() -> None:
    svc = Workload(name="svc", user=U1000, read_only_root=True, mounts=(Mount("/scratch", VOLUME, "s"),),
                   env=(("TMPDIR", "/scratch/t"),))
    p = plan([svc], [finding(NO_TEMP_DIR, "svc", "/scratch/t")])
    assert p.workloads[0].env == ()
    assert p.volumes[0].dirs == (DirPlan("t", 0o700, "24h"),)


def test_every_writer_of_an_owned_volume_is_gated_readers_are_not() -> None:
    a = Workload(name="a", user=U1000, mounts=(Mount("/d", VOLUME, "shared"),))
    b = Workload(name="b", user=User(1000, 1000), mounts=(Mount("/x", VOLUME, "shared"),))
    r = Workload(name="r", user=User(2000, 2000), mounts=(Mount("/d", VOLUME, "shared", read_only=True),))
    p = plan([a, b, r], [finding(VOLUME_NOT_OWNED, "a", "/d")])
    assert [(w.name, w.gated) for w in p.workloads] == [("a", True), ("b", True)]
    assert p.volumes[0].writers == ("a", "b")


def test_a_root_writer_does_not_conflict_and_a_root_only_volume_stays_root() -> None:
    a = Workload(name="a", user=U1000, mounts=(Mount("/d", VOLUME, "v"),))
    root = Workload(name="root", user=User(0, 0), mounts=(Mount("/d", VOLUME, "v"),))
    assert plan([a, root], [finding(VOLUME_NOT_OWNED, "a", "/d")]).volumes[0].owner == Owner(1000, 1000)
    rootonly = Workload(name="r", user=User(0, 0), read_only_root=True, mounts=(Mount("/d", VOLUME, "w"),))
    p = plan([rootonly], [finding(NO_TEMP_DIR, "r", "/tmp")])
    assert p.volumes[0].owner == Owner(0, 0) and p.workloads[0].env == (("TMPDIR", "/d/.tmp"),)


def test_unknown_uid_is_refused_with_the_way_out_and_owner_flag_resolves_it() -> None:
    svc = Workload(name="svc", user=UNKNOWN, read_only_root=True)
    p = plan([svc], [finding(NO_TEMP_DIR, "svc", "/tmp")])
    (r,) = p.refusals
    assert "unknown" in r.why and "not present locally" in r.why and "--owner svc=UID:GID" in r.fix
    assert p.empty  # a refused plan changes nothing at all
    ok = plan([svc], [finding(NO_TEMP_DIR, "svc", "/tmp")], owners={"svc": Owner(1000, 1001)})
    assert not ok.refusals and ok.volumes[0].owner == Owner(1000, 1001)


def test_an_unknown_second_writer_is_refused_too() -> None:
    a = Workload(name="a", user=U1000, mounts=(Mount("/d", VOLUME, "v"),))
    b = Workload(name="b", user=UNKNOWN, mounts=(Mount("/d", VOLUME, "v"),))
    (r,) = plan([a, b], [finding(VOLUME_NOT_OWNED, "a", "/d")]).refusals
    assert r.service == "b" and "volume v" in r.why


def test_one_volume_written_by_two_uids_is_refused() -> None:
    a = Workload(name="a", user=U1000, mounts=(Mount("/d", VOLUME, "v"),))
    b = Workload(name="b", user=User(1001, 1001), mounts=(Mount("/e", VOLUME, "v"),))
    p = plan([a, b], [finding(VOLUME_NOT_OWNED, "a", "/d")])
    (r,) = p.refusals
    assert "different uids" in r.why and "a (1000:1000)" in r.why and "b (1001:1001)" in r.why
    assert p.empty
    # naming one owner for both settles it
    same = plan([a, b], [finding(VOLUME_NOT_OWNED, "a", "/d")], owners={"b": Owner(1000, 1000)})
    assert not same.refusals


def test_a_cache_volume_mounted_read_only_everywhere_is_refused() -> None:
    svc = Workload(name="svc", user=U1000, mounts=(Mount("/models", VOLUME, "models", read_only=True),),
                   env=(("HF_HOME", "/models/hf"),))
    (r,) = plan([svc], [finding(CACHE_UNWRITABLE, "svc", "/models/hf")]).refusals
    assert "read-only in every service" in r.why and "read-write" in r.fix


def test_state_on_the_layer_gets_a_volume_state_on_a_tmpfs_is_refused() -> None:
    svc = Workload(name="svc", user=U1000)
    p = plan([svc], [finding(STATE_NOT_PERSISTENT, "svc", "/var/lib/app")])
    assert p.workloads[0].mounts == (Mount("/var/lib/app", VOLUME, "volinit-svc-var-lib-app"),)
    assert p.volumes[0].role == "state"
    tmp = Workload(name="svc", user=U1000, mounts=(Mount("/data", TMPFS),))
    (r,) = plan([tmp], [finding(STATE_NOT_PERSISTENT, "svc", "/data")]).refusals
    assert "cannot remove" in r.why
    # seed 004: a dir below a tmpfs /tmp gets a volume mounted over it
    p = plan([Workload(name="api", user=U1000, mounts=(Mount("/tmp", TMPFS),))],
             [finding(STATE_NOT_PERSISTENT, "api", "/tmp/final_episodes")])
    assert p.workloads[0].mounts == (Mount("/tmp/final_episodes", VOLUME, "volinit-api-tmp-final_episodes"),)


def test_no_findings_no_changes() -> None:
    p = plan([ocr()], [])
    assert p.empty and not p.needs_init and not p.refusals


def test_same_plan_whatever_the_input_order_and_duplicates() -> None:
    web = Workload(name="web", user=U1000, read_only_root=True)
    findings = OCR_FINDINGS + [finding(NO_TEMP_DIR, "web", "/tmp")]
    want = plan([ocr(), web], findings)
    rng = random.Random(7)
    for _ in range(20):
        ws, fs = [ocr(), web], findings * 2
        rng.shuffle(ws)
        rng.shuffle(fs)
        assert plan(ws, fs) == want


def _walk(value: object) -> None:
    assert not isinstance(value, (dict, list, set)), f"mutable or untyped value in the plan: {value!r}"
    if dataclasses.is_dataclass(value):
        assert type(value).__dataclass_params__.frozen, type(value)  # type: ignore[attr-defined]
        for f in dataclasses.fields(value):
            _walk(getattr(value, f.name))
    elif isinstance(value, tuple):
        for v in value:
            _walk(v)


def test_the_plan_is_frozen_and_holds_no_dicts() -> None:
    web = Workload(name="web", user=U1000, read_only_root=True)
    p = plan([ocr(), web], OCR_FINDINGS + [finding(NO_TEMP_DIR, "web", "/tmp")])
    assert isinstance(p, FixPlan)
    _walk(p)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.volumes = ()  # type: ignore[misc]


def test_the_planner_imports_nothing_of_compose_or_kubernetes() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(planmod))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert imported <= {"__future__", "posixpath", "re", "dataclasses", "typing", "volinit.host.workload", "volinit.spec"}


def test_an_owned_volume_gets_the_dirs_its_writers_variables_name() -> None:
    """tempfile never creates TMPDIR: a volume the init owns gets the dirs the env names."""
    web = Workload(name="web", user=U1000, mounts=(Mount("/app/scratch", VOLUME, "scratch"),),
                   env=(("TMPDIR", "/app/scratch/tmp"), ("XDG_CACHE_HOME", "/app/scratch/xdg"), ("HF_HOME", "/elsewhere")))
    p = plan([web], [finding(VOLUME_NOT_OWNED, "web", "/app/scratch")])
    assert p.volumes[0].dirs == (DirPlan("tmp", 0o700, "24h"), DirPlan("xdg"))
    assert p.workloads[0].env == ()


def test_a_tmpdir_that_climbs_out_of_its_volume_is_not_taken_for_one_on_it() -> None:
    svc = Workload(name="svc", user=U1000, read_only_root=True, mounts=(Mount("/app/cache", VOLUME, "c"),),
                   env=(("TMPDIR", "/app/cache/../etc"),))
    p = plan([svc], [finding(NO_TEMP_DIR, "svc", "/app/etc")])
    assert p.workloads[0].env == (("TMPDIR", "/app/cache/.tmp"),)
    assert p.volumes[0].dirs == (DirPlan(".tmp", 0o700, "24h"),)


def test_an_init_of_the_users_own_is_not_a_writer_to_gate_or_to_count() -> None:
    app = Workload(name="app", user=U1000, mounts=(Mount("/d", VOLUME, "v"),))
    theirs = Workload(name="chown-once", user=User(0, 0), init=True, mounts=(Mount("/v", VOLUME, "v"),))
    p = plan([app, theirs], [finding(VOLUME_NOT_OWNED, "app", "/d")])
    assert p.volumes[0].writers == ("app",) and [w.name for w in p.workloads] == ["app"]
