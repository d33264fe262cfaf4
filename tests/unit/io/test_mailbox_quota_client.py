"""smtpd's RCPT-time quota question, asked over a unix socket of the
virtual agent's (hato.io.mailbox_quota_client, services.virtual)."""

from __future__ import annotations

import os
import socket
import threading

from hato.delivery.request import DeliveryRequest, encode_statuses
from hato.io.mailbox_quota_client import MailboxQuotaQuery
from hato.policy.maildir_quota import format_usage_line
from hato.proto.attr import AttrReader, encode
from hato.services.virtual import Virtual
from tests.unit.policy.conftest import make_settings


def serve_once(path: str, handle) -> threading.Thread:
    """Answer one request on the unix socket *path* with *handle*."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        with conn, listener:
            parser = AttrReader()
            msg = None
            while msg is None:
                parser.receive_data(conn.recv(65536))
                msg = parser.next_message()
            conn.sendall(encode(handle(msg)))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_virtual_answers_without_delivering(tmp_path):
    (tmp_path / "private").mkdir()
    base = tmp_path / "mail"
    box = base / "example.com" / "bob"
    for sub in ("tmp", "new", "cur"):
        (box / sub).mkdir(parents=True)
    (box / "maildirsize").write_bytes(b"1000S\n" + format_usage_line(1000, 3))
    uid, gid = os.getuid(), os.getgid()
    settings = make_settings(
        f"queue_directory = {tmp_path}\nvirtual_mailbox_base = {base}\n"
        "virtual_mailbox_maps = inline:{ bob@example.com=example.com/bob/, "
        "carol@example.com=example.com/carol }\n"
        f"virtual_uid_maps = static:{max(uid, 1)}\nvirtual_gid_maps = static:{gid}\n"
        "virtual_minimum_uid = 1\nhato_mailbox_quota_bounce = yes\n")
    agent = Virtual(settings)
    seen = []

    def handle(msg):
        req = DeliveryRequest.decode(msg)
        seen.append(req)
        statuses = agent.deliver(req, {})
        assert all(st.logged for st in statuses)  # the agent logs nothing
        return encode_statuses(statuses)

    query = MailboxQuotaQuery(str(tmp_path), {"virtual": "virtual"}, timeout=10)
    path = str(tmp_path / "private" / "virtual")
    t = serve_once(path, handle)
    assert query("bob@example.com", "virtual", "example.com", "a@example.org", 0) == \
        ("5.2.2", "Mailbox full")
    t.join()
    assert seen[0].attributes == {"quota_query": "yes"} and seen[0].queue_id == "NOQUEUE"
    os.unlink(path)
    # room again: None; nothing was written into the Maildir
    (box / "maildirsize").write_bytes(b"1000S\n" + format_usage_line(10, 1))
    t = serve_once(path, handle)
    assert query("bob@example.com", "virtual", "example.com", "a@example.org", 100) is None
    t.join()
    assert os.listdir(box / "new") == [] and os.listdir(box / "tmp") == []
    os.unlink(path)
    # an mbox recipient, an unknown one: no opinion
    for rcpt in ("carol@example.com", "nobody@example.com"):
        t = serve_once(path, handle)
        assert query(rcpt, "virtual", "example.com", "", 0) is None
        t.join()
        os.unlink(path)


def test_only_local_and_virtual_agents_are_asked(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "master.cf").write_text(
        "local unix - n n - - local\nvirtual unix - n n - - virtual\n"
        "lmtp unix - - n - - lmtp\nmyvirt unix - n n - - virtual\n")
    settings = make_settings(f"config_directory = {tmp_path}/config\n"
                             f"queue_directory = {tmp_path}\n")
    query = MailboxQuotaQuery.from_settings(settings)
    assert query.agents == {"local": "local", "virtual": "virtual", "myvirt": "virtual"}
    # lmtp is never asked; a silent agent means "accept"
    assert query("x@example.com", "lmtp", "", "", 0) is None
    assert query("x@example.com", "virtual", "", "", 0) is None  # no socket
