"""SMTP dialogues played against Debian's Postfix smtpd and hato's smtpd.

Each ``tests/dialogs/*.dlg`` file is a group of dialogues with main.cf
settings at its top (on top of :data:`tests.postfix_instance.COMMON_MAIN_CF`
and :data:`tests.dialogs.runner.GROUP_DEFAULTS`). Files whose effective
settings agree share one private Postfix instance (tests/postfix_instance.py)
and one hato instance (tests/integration/instance.py) with those same
settings; each dialogue is one connection to each. One test id per
dialogue: ``test_dialog[FILE/NAME]``. tests/dialogs/runner.py describes the
format and what is compared.

Modes, by environment variable:

* default: each dialogue is played against a live Postfix and compared with
  the transcript recorded in ``tests/dialogs/expected/FILE.json`` (codes,
  enhanced codes, EHLO keywords, closes, queued envelopes, and the reply
  texts too: Postfix must answer exactly as recorded), and against hato,
  whose transcript must match Postfix's.
* ``HATO_DIALOGS_RECORD=1``: (re)record those transcripts from Postfix.
* ``HATO_DIALOGS_HATO=0``: Postfix only. ``HATO_DIALOGS_POSTFIX=0``: hato
  only, compared with the recorded transcripts (then no Postfix is started).
* ``HATO_DIALOGS_TEXTS=1``: hato's reply texts must match Postfix's too
  (queue ids masked), to see where they differ.
"""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.dialogs.runner import (
    GROUP_DEFAULTS,
    Transcript,
    load_expected,
    load_groups,
    play,
    save_expected,
)
from tests.postfix_instance import COMMON_MAIN_CF, PostfixInstance

pytestmark = pytest.mark.differential

RECORD = os.environ.get("HATO_DIALOGS_RECORD") == "1"
HATO = os.environ.get("HATO_DIALOGS_HATO", "1") != "0" and not RECORD
POSTFIX = os.environ.get("HATO_DIALOGS_POSTFIX", "1") != "0" or RECORD
TEXTS = os.environ.get("HATO_DIALOGS_TEXTS") == "1"

GROUPS = {g.name: g for g in load_groups()}


def config_of(group) -> tuple:
    """A group's effective main.cf settings: files that agree share instances."""
    return tuple(sorted((GROUP_DEFAULTS | group.main_cf).items()))


# Configs in the order of the first file using them; dialogues grouped by config
# so that each config's instances start once.
CONFIGS: dict[tuple, str] = {}      # config -> name (its first file)
for _g in GROUPS.values():
    CONFIGS.setdefault(config_of(_g), _g.name)
DIALOGS = [d for c in CONFIGS for g in GROUPS.values() if config_of(g) == c
           for d in g.dialogs]
IDS = [d.id for d in DIALOGS]


def hato_settings(group) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in COMMON_MAIN_CF.splitlines():
        k, _, v = line.partition("=")
        settings[k.strip()] = v.strip()
    settings.update(GROUP_DEFAULTS)
    settings.update(group.main_cf)
    return settings


# -- servers, one pair per config at a time ---------------------------------------------

class Servers:
    """The instances of the config being played. While one config plays,
    the next one's instances start in the background, and the previous
    one's stop in the background."""

    def __init__(self, order: list[tuple]):
        self.order = order              # configs in the order the tests use them
        self.config: tuple | None = None
        self.postfix: PostfixInstance | None = None
        self.hato = None
        self.postfix_runs: dict[str, Transcript] = {}       # dialog id -> transcript
        self.recorded: dict[str, dict[str, Transcript]] = {}    # group -> name -> transcript
        self.pool = ThreadPoolExecutor(max_workers=4)      # starting and stopping
        self.player = ThreadPoolExecutor(max_workers=1)    # hato's side of a dialogue
        self.starting: dict[tuple, Future] = {}

    def _start(self, config: tuple) -> Future:
        if config not in self.starting:
            self.starting[config] = self.pool.submit(start_config, config)
        return self.starting[config]

    def switch(self, group) -> None:
        config = config_of(group)
        if config == self.config:
            return
        self.close()
        self.postfix, self.hato = self._start(config).result()
        del self.starting[config]
        self.config = config
        if config in self.order:
            i = self.order.index(config)
            if i + 1 < len(self.order):
                self._start(self.order[i + 1])

    def recorded_for(self, dialog) -> Transcript | None:
        if dialog.group not in self.recorded:
            self.recorded[dialog.group] = load_expected(dialog.group)
        return self.recorded[dialog.group].get(dialog.name)

    def close(self) -> None:
        if RECORD and self.postfix_runs:
            for name, g in GROUPS.items():
                runs = {t.dialog.split("/", 1)[1]: t for t in self.postfix_runs.values()
                        if t.dialog.split("/", 1)[0] == name}
                if runs:
                    merged = load_expected(name)
                    merged.update(runs)
                    save_expected(name, {d.name: merged[d.name] for d in g.dialogs
                                         if d.name in merged})
        self.postfix_runs = {}
        # Stopping takes a second or more (Postfix's master lingers after
        # SIGTERM): done in the background.
        for inst in (self.postfix, self.hato):
            if inst is not None:
                self.pool.submit(inst.cleanup)
        self.postfix = self.hato = None
        self.config = None

    def finish(self) -> None:
        self.close()
        for f in self.starting.values():        # started ahead but not used
            if f.exception() is not None:       # its start failed: nothing to stop
                continue
            for inst in f.result():
                if inst is not None:
                    self.pool.submit(inst.cleanup)
        self.pool.shutdown(wait=True)
        self.player.shutdown(wait=True)

    def postfix_transcript(self, dialog) -> Transcript:
        if dialog.id not in self.postfix_runs:
            assert self.postfix is not None
            self.postfix_runs[dialog.id] = play(dialog, "127.0.0.1", self.postfix.port,
                                                self.postfix.log_text)
        return self.postfix_runs[dialog.id]


def start_config(config: tuple):
    """(PostfixInstance or None, hato Instance or None), both running;
    started side by side."""
    name = CONFIGS[config]
    group = GROUPS[name]

    def postfix():
        inst = PostfixInstance(dict(config), name=f"dlg-{name}")
        inst.__enter__()
        return inst

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(postfix) if POSTFIX else None,
                   pool.submit(start_hato, name, hato_settings(group)) if HATO else None]
    started, errors = [], []
    for f in futures:
        if f is None:
            started.append(None)
        elif f.exception() is not None:
            started.append(None)
            errors.append(f.exception())
        else:
            started.append(f.result())
    if errors:
        for inst in started:
            if inst is not None:
                inst.cleanup()
        raise errors[0]
    return tuple(started)


def start_hato(group: str, settings: dict[str, str]):
    from tests.integration.instance import Instance

    inst = Instance(f"dlg-{group}"[:20])
    try:
        inst.postconf(*(f"{k} = {v}" for k, v in settings.items()))
        inst.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", inst.port), timeout=1) as s:
                    if s.recv(100)[:1] in (b"2", b"4", b"5"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"hato smtpd does not answer on {inst.port}\n"
                                     f"{inst.log_text()[-3000:]}")
            time.sleep(0.05)
    except BaseException:
        inst.cleanup()
        raise
    return inst


@pytest.fixture(scope="module")
def servers(request):
    order: list[str] = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec and "dialog" in callspec.params:
            c = config_of(GROUPS[callspec.params["dialog"].group])
            if c not in order:
                order.append(c)
    s = Servers(order)
    yield s
    s.finish()


def explain(what: str, got: Transcript, want: Transcript, texts: bool) -> str:
    a = json.dumps(got.key(texts), indent=1)
    b = json.dumps(want.key(texts), indent=1)
    import difflib

    diff = "\n".join(difflib.unified_diff(b.splitlines(), a.splitlines(), "expected", what,
                                          lineterm="", n=2))
    return (f"{got.dialog}: {what} differs\n{diff}\n--- {what}:\n{got.render()}\n"
            f"--- expected:\n{want.render()}")


# -- the tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("dialog", DIALOGS, ids=IDS)
def test_dialog(servers, dialog):
    """Postfix still answers as recorded (or record it), and hato answers
    as Postfix does."""
    servers.switch(GROUPS[dialog.group])
    recorded = servers.recorded_for(dialog)
    problems = []
    hato_run = None
    if HATO:        # played while Postfix plays
        assert servers.hato is not None
        hato_run = servers.player.submit(play, dialog, "127.0.0.1", servers.hato.port,
                                       servers.hato.log_text)
    want = recorded
    if POSTFIX:
        want = servers.postfix_transcript(dialog)
        if RECORD:
            pass
        elif recorded is None:
            problems.append(f"{dialog.id} has no recorded transcript: run with "
                            "HATO_DIALOGS_RECORD=1\n" + want.render())
        elif want.key(texts=True) != recorded.key(texts=True):
            problems.append(explain("postfix", want, recorded, True))
    if hato_run is not None:
        got = hato_run.result()
        if want is None:
            problems.append(f"{dialog.id} has no recorded transcript")
        elif got.key(TEXTS) != want.key(TEXTS):
            problems.append(explain("hato", got, want, TEXTS))
    assert not problems, "\n\n".join(problems)
