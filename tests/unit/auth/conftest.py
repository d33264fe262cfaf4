"""argon2 at its cheapest in unit tests: the parameters live in the hash."""

from __future__ import annotations

import argon2
import pytest


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    from hato.auth import sasldb

    monkeypatch.setattr(sasldb, "PASSWORD_HASHER",
                        argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    monkeypatch.setattr(sasldb, "_DUMMY_HASH", None)
