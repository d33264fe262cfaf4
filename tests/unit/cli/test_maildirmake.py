"""hato maildirmake: Courier's options, permissions and maildirsize."""

from __future__ import annotations

import os
import stat

import pytest

from hato.cli.maildirmake import main, modified_utf7
from hato.policy.maildir_quota import format_usage_line


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_plain_maildir(tmp_path, capsys):
    box = tmp_path / "M"
    assert main([str(box)]) == 0
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]
    assert {mode(box / d) for d in ("", "cur", "new", "tmp")} == {0o700}
    assert main([str(box)]) == 1
    assert capsys.readouterr().err == f"maildirmake: {box}: File exists\n"


def test_quota_written_as_courier_writes_it(tmp_path):
    box = tmp_path / "M"
    assert main(["-q", "10C,0100S", str(box)]) == 0  # created on the way
    assert (box / "maildirsize").read_bytes() == b"100S,10C\n" + format_usage_line(0, 0)
    (box / "new" / "1.a.h,S=40").write_bytes(b"x" * 40)
    (box / "cur" / "2.b.h:2,S").write_bytes(b"x" * 7)
    assert main(["-q", "5000S", str(box)]) == 0  # changes the quota, counts again
    assert (box / "maildirsize").read_bytes() == b"5000S\n" + format_usage_line(47, 2)
    assert main(["-q", "0S", str(box)]) == 0  # no quota: nothing changes
    assert (box / "maildirsize").read_bytes().startswith(b"5000S\n")


@pytest.mark.parametrize("quota", ["", "lots", "10X", "-1S", "5S,6S"])
def test_bad_quota(tmp_path, capsys, quota):
    assert main(["-q", quota, str(tmp_path / "M")]) == 1
    assert "invalid quota" in capsys.readouterr().err
    assert not (tmp_path / "M").exists()


def test_folders_and_shared_modes(tmp_path, capsys):
    box = tmp_path / "S"
    assert main(["-S", str(box)]) == 0
    assert mode(box) == 0o755 and mode(box / "new") == 0o700
    assert main(["-f", "Drafts.Urgent", str(box)]) == 0
    assert (box / ".Drafts.Urgent" / "maildirfolder").read_bytes() == b""
    expected = {"read": (0o755, 0o755), "write": (0o1755, 0o1777),
                "read,group": (0o750, 0o750), "write,group": (0o1750, 0o1770)}
    for i, (how, (top, sub)) in enumerate(expected.items()):
        assert main(["-s", how, "-f", f"F{i}", str(box)]) == 0
        assert mode(box / f".F{i}") == top
        assert {mode(box / f".F{i}" / d) for d in ("tmp", "new", "cur")} == {sub}
    assert main(["-F", "Déjà vu", str(box)]) == 0
    assert (box / ".D&AOk-j&AOA- vu").is_dir()
    capsys.readouterr()
    assert main(["-f", "F0", str(box)]) == 1
    assert main(["-f", "a/b", str(box)]) == 1
    assert main(["-f", "X", str(tmp_path / "none")]) == 1
    assert main(["-s", "write", str(box)]) == 1  # -s needs -f
    assert main(["-s", "sideways", "-f", "Y", str(box)]) == 1
    assert main([]) == 1 and main(["-x", str(box)]) == 1
    err = capsys.readouterr().err
    assert "Usage: maildirmake [ options ] maildir" in err and "File exists" in err


@pytest.mark.parametrize("name,encoded", [
    ("Sent", "Sent"), ("a&b", "a&-b"), ("Déjà vu", "D&AOk-j&AOA- vu"),
    ("日本語", "&ZeVnLIqe-"), ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
])
def test_modified_utf7(name, encoded):
    # the last one is RFC 3501's example
    assert modified_utf7(name) == encoded
