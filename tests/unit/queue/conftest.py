"""Fixtures for the queue store tests."""

from __future__ import annotations

import os

import pytest

from hato.queue.envelope import Envelope, Recipient
from hato.queue.fileops import FileOps
from hato.queue.store import MESSAGE_QUEUES, QueueStore


class NoSyncFileOps(FileOps):
    """FileOps without the fsyncs, for tests about naming rather than
    durability (10,000 commits)."""

    def fsync(self, fd: int) -> None:
        pass

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


@pytest.fixture
def qdir(tmp_path) -> str:
    return str(tmp_path / "queue")


@pytest.fixture
def store(qdir) -> QueueStore:
    s = QueueStore(qdir)
    s.ensure_layout()
    return s


def sample_envelope(n: int = 2) -> Envelope:
    return Envelope(
        sender="sender@example.com",
        recipients=[Recipient(f"rcpt{i}@example.org", f"Alias{i}@example.org",
                              frozenset({"SUCCESS", "FAILURE"}) if i % 2 else frozenset(),
                              f"rfc822;Alias{i}@example.org" if i % 2 else "")
                    for i in range(n)],
        ret="HDRS", envid="ENV-1",
        attributes={"log_client_name": "client.example.com",
                    "log_client_address": "192.0.2.1", "sasl_username": "joe"},
        full_name="Joe User")


def all_files(root: str) -> list[str]:
    """Every regular file under *root*, relative."""
    out = []
    for d, _, files in os.walk(root):
        out.extend(os.path.relpath(os.path.join(d, f), root) for f in files)
    return sorted(out)


def listed(s: QueueStore) -> dict[str, list[str]]:
    return {q: s.list(q) for q in MESSAGE_QUEUES if s.list(q)}
