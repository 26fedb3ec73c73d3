"""The compose reader's own parsing, no engine needed: tmpfs options, and a user string read
as Docker (runc) reads it against the image's /etc/passwd and /etc/group."""

from __future__ import annotations

import pytest

from volinit.host.compose import _tmpfs_entries, parse_size
from volinit.host.image import ImageFacts, PasswdEntry, resolve_user


def test_tmpfs_options_are_read() -> None:
    (m,) = _tmpfs_entries("/tmp:size=512m,mode=0755,uid=1000,gid=1000")
    assert (m.target, m.size, m.mode, m.owner) == ("/tmp", 512 << 20, 0o755, (1000, 1000))
    (m,) = _tmpfs_entries(["/run/x:noexec,nosuid"])
    assert (m.size, m.mode, m.owner, m.read_only) == (None, None, None, False)
    (m,) = _tmpfs_entries(["/x:uid=app,size=50%"])  # not numbers: no owner, unbounded
    assert (m.size, m.owner) == (None, None)


@pytest.mark.parametrize("text, size", [("16m", 16 << 20), ("1g", 1 << 30), ("1.5G", 3 << 29), ("100", 100),
                                        ("2gb", 2 << 30), ("lots", None), ("50%", None)])
def test_sizes(text: str, size: int | None) -> None:
    assert parse_size(text) == size


IMAGE = ImageFacts("img", True, passwd=(PasswdEntry("root", 0, 0, "/root"), PasswdEntry("app", 1000, 1000, "/home/app"),
                                        PasswdEntry("worker", 999, 999, "/nonexistent")),
                   groups=(("app", 1000, ()), ("video", 44, ("app",)), ("staff", 50, ())))


@pytest.mark.parametrize("spec, expect", [
    ("", (0, 0, (), "/root", "")),
    ("app", (1000, 1000, (44,), "/home/app", "")),
    ("app:staff", (1000, 50, (), "/home/app", "")),
    ("1000", (1000, 1000, (44,), "/home/app", "")),
    ("4242", (4242, 0, (), "", "")),  # no entry: gid 0 and Docker's HOME=/
    ("4242:4242", (4242, 4242, (), "", "")),
    ("worker", (999, 999, (), "/nonexistent", "")),
])
def test_user_strings_resolve_in_the_image(spec: str, expect: tuple) -> None:
    assert resolve_user(spec, IMAGE) == expect


def test_unresolvable_users_are_unknown_with_the_reason() -> None:
    uid, _, _, _, why = resolve_user("nobody-here", IMAGE)
    assert uid is None and "not in the image's /etc/passwd" in why
    absent = ImageFacts("img", False, "image img is not present on this engine (docker compose build)")
    uid, _, _, _, why = resolve_user("app", absent)
    assert uid is None and "docker compose build" in why
    assert resolve_user("1000:1000", absent)[:2] == (1000, 1000)  # numbers need no image
