"""Helpers for the delivery tests.

Tests run as root (CI, containers) and as ordinary users. Root tests
deliver on behalf of a made-up user so that ownership changes and the
"could the recipient have done this" checks are exercised; ordinary runs
deliver as themselves. Either way the same assertions hold.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

AS_ROOT = os.geteuid() == 0
FAKE_UID = 4242
FAKE_GID = 4343


@pytest.fixture
def recipient_ids() -> tuple[int | None, int | None]:
    """(uid, gid) to deliver as: a made-up user when root, else None."""
    return (FAKE_UID, FAKE_GID) if AS_ROOT else (None, None)


@pytest.fixture
def user_dir(tmp_path: Path, recipient_ids) -> Path:
    """A directory the recipient owns (their home)."""
    home = tmp_path / "home"
    home.mkdir()
    uid, gid = recipient_ids
    if uid is not None:
        os.chown(home, uid, gid)
    return home


def expected_owner(recipient_ids) -> int:
    uid, _ = recipient_ids
    return uid if uid is not None else os.geteuid()
