import pytest
from hato.queue.store import QueueStore
from tests.unit.queue import test_powerloss as T

def test_no_dirsync(tmp_path, monkeypatch):
    monkeypatch.setattr(QueueStore, "sync_dir", lambda self, p: None)
    with pytest.raises(AssertionError):
        T.test_power_loss_at_every_step(tmp_path)

def test_no_filesync(tmp_path, monkeypatch):
    monkeypatch.setattr(T.PowerLossModel, "fsync", lambda self, fd: self._snap())
    with pytest.raises(AssertionError):
        T.test_power_loss_at_every_step(tmp_path)

def test_move_nosync(tmp_path, monkeypatch):
    orig = QueueStore.move
    monkeypatch.setattr(QueueStore, "move", lambda self, q, s, d, sync=True: orig(self, q, s, d, sync=False))
    with pytest.raises(AssertionError):
        T.test_power_loss_at_every_step(tmp_path)
