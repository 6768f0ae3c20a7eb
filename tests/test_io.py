"""Atomic writes keep what the replaced file was: its mode, and a symlink pointing at it."""

import os
import stat

from graphdiff.io import atomic_write_text


def test_atomic_write_keeps_the_mode_and_writes_through_a_symlink(tmp_path):
    target = tmp_path / "data.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.txt",
        "link.txt",
    ]  # no temporary left
