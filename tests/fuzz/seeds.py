"""Write the seed corpora in tests/fuzz/corpus/<target>/.

    python -m tests.fuzz.seeds

Each seed is a valid input to its harness (option bytes first, see the
harness), built with hato's own encoders and writers where hato has one
(queue files by QueueStore, cdb files by write_cdb, saslauthd requests,
PROXY headers, attribute messages), so the fuzzer starts from the real
formats. Re-run it when a format changes; the files are committed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile

from hato.proto import milter as M
from hato.proto.attr import Attrs, encode
from hato.proto.policy import encode_request
from hato.proto.proxy_protocol import ProxyHeader, encode_v1, encode_v2
from hato.proto.saslauthd import encode_reply, encode_request as saslauthd_request
from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import QueueStore
from hato.tables.cdb import write_cdb

from tests.fuzz.harness import CORPUS, ROOT

CRLF = b"\r\n"


def _lines(*lines: str) -> bytes:
    return b"".join(line.encode("utf-8") + CRLF for line in lines)


def smtpd() -> list[bytes]:
    # option bytes: two of limits, split, number of decisions, decisions
    plain = b"\x00\x00\x00\x00"
    strict = b"\xa0\x80\x07\x00"  # bare newline "yes", extensions incl. AUTH/STARTTLS, 1-byte reads
    dialog = _lines("EHLO client.example", "MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME",
                    "RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.org",
                    "DATA") + b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n" + _lines("QUIT")
    bdat = _lines("EHLO client.example", "MAIL FROM:<>", "RCPT TO:<b@example.org>") + \
        b"BDAT 5\r\nhello" + b"BDAT 7 LAST\r\n world\n" + _lines("RSET", "QUIT")
    auth = _lines("EHLO c", "AUTH PLAIN AGEAYg==", "AUTH LOGIN", "dXNlcg==", "*",
                  "STARTTLS", "EHLO c", "VRFY root", "ETRN example.com", "NOOP", "HELP",
                  "XCLIENT NAME=x ADDR=192.0.2.1", "XFORWARD HELO=x", "QUIT")
    smuggle = _lines("HELO c", "MAIL FROM:<a@b>", "RCPT TO:<c@d>", "DATA") + \
        b"x\n.\nMAIL FROM:<evil@x>\r\n.\r\n" + b"\r\n.\r\n" + _lines("QUIT")
    junk = b"GET / HTTP/1.0\r\nHost: x\r\n\r\n\x00\xff\xfe" + b"A" * 3000 + b"\r\n"
    return [plain + dialog, strict + dialog, plain + bdat, b"\x00\x80\x01\x03\x01\x05\x07" + bdat,
            b"\x00\x80\x00\x02\x00\x03" + auth, b"\x60\x00\x00\x00" + smuggle,
            b"\x01\x00\x00\x00" + junk]


def smtp_client() -> list[bytes]:
    ehlo = _lines("220 mx.example ESMTP", "250-mx.example", "250-PIPELINING",
                  "250-SIZE 10240000", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
                  "250-AUTH PLAIN LOGIN", "250-STARTTLS", "250 CHUNKING")
    txn = _lines("250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "550 5.1.1 <r3> unknown",
                 "250 2.1.5 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>",
                 "250 2.0.0 Ok: queued as 4F2A3B1C0D", "221 2.0.0 Bye")
    # params (2 bytes), message (2 bytes), split, actions
    return [b"\x00\x00\x00\x02\x00\x00" + ehlo + txn,
            b"\x00\x01\x01\x02\x05\x01" + ehlo + _lines("220 2.0.0 Ready") + ehlo + txn,
            b"\x20\x00\x00\x02\x00\x00" + ehlo + _lines("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6",
                                                        "235 2.7.0 Ok") + txn,
            b"\x01\x00\x00\x04\x00\x00" + _lines("220 lmtp", "250-lmtp", "250 PIPELINING")
            + txn + _lines("250 ok r1", "452 4.2.2 full", "250 ok r3"),
            b"\x00\x00\x00\x01\x07\x80" + _lines("220-mx", "220 hi", "250 mx") + txn + txn,
            b"\x00\x00\x00\x00\x00\x00" + _lines("421 4.3.2 go away"),
            b"\x00\x00\x00\x00\x00\x00" + b"220 ok\r\n250-x\r\nbogus\r\n",
            b"\x00\x00\x00\x00\x00\x00" + "220 ok\r\n250-x\r\n250 SIZE \u00b2\r\n".encode() + txn]


def maincf() -> list[bytes]:
    seeds = []
    for name in ("main.cf", "deux-main.cf"):
        with open(os.path.join(ROOT, "tests", "data", "reference", name), "rb") as fh:
            seeds.append(b"\x07" + fh.read())
    seeds.append(b"\x04" + b"\n".join([
        b"myhostname = mx.example.com",
        b"mydomain = ${myhostname?{example.com}:{localdomain}}",
        b"a = ${{$compatibility_level} <level {3.6} ? {old} : {new}}",
        b"b = ${{$a} == {new}?{yes}:{no}} $$literal $(mydomain) ${c:fallback}",
        b"c = $d", b"d = $c",
        b"smtpd_recipient_restrictions = permit_mynetworks,",
        b"    reject_unauth_destination, check_policy_service inet:127.0.0.1:10023",
        b"message_size_limit = 10m", b"maximal_queue_lifetime = 5d", b"smtpd_tls_auth_only = yes",
        b"# comment", b""]))
    return seeds


def mastercf() -> list[bytes]:
    seeds = []
    for name in ("master.cf", "deux-master.cf"):
        with open(os.path.join(ROOT, "tests", "data", "reference", name), "rb") as fh:
            seeds.append(b"\x03" + fh.read())
    seeds.append(b"\x01" + b"\n".join([
        b"127.0.0.1:submission inet n - n 60? 10 smtpd",
        b"  -o syslog_name=postfix/submission",
        b"  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }",
        b"pickup unix n - n 60 1 pickup", b"policy unix - n n - 0 spawn",
        b"  user=nobody argv=/usr/bin/policyd --flag \"quoted arg\"", b""]))
    return seeds


def _table(opts: int, key: bytes, body: bytes) -> bytes:
    return bytes([opts, len(key)]) + key + body


def regexp() -> list[bytes]:
    rules = (b"/^(.*)@example\\.com$/ OK $1\n"
             b"if /^root/\n!/^root@/ REJECT no\nendif\n"
             b"/^Subject: .*viagra/i REJECT spam\n"
             b"/a/!/b/ DUNNO\n/(x)(y)(z)/ PREPEND ${1}${2}$3\n")
    return [_table(0, b"user@example.com", rules),
            _table(4, b"xyz", b"{/^x(y)z$/ OK $1}, {/./ DUNNO}"),
            _table(3, b"Root", rules + b"/[unterminated REJECT\n")]


def pcre() -> list[bytes]:
    rules = (b"/^(?<user>[^@]+)@example\\.com$/ OK $1\n"
             b"if !/^admin/\n/^(.+)\\+(.*)@/ REDIRECT $1@example.com\nendif\n"
             b"/^Subject:.*\\bSPAM\\b/ix REJECT\n/(a|b)+c/ DISCARD\n")
    return [_table(0, b"user+tag@example.com", rules),
            _table(4, b"abc", b"{/^a(b)c$/ OK $1}, {/x/ DUNNO}"),
            _table(2, b"\xc3\xa9t\xc3\xa9@example.com", rules)]


def cidr() -> list[bytes]:
    rules = (b"192.0.2.0/24 OK\n!198.51.100.0/24 REJECT\n2001:db8::/32 DUNNO\n"
             b"if 10.0.0.0/8\n10.1.0.0/16 REJECT inside\nendif\n[::1] OK\n")
    return [_table(0, b"192.0.2.1", rules), _table(0, b"10.1.2.3", rules),
            _table(4, b"2001:db8::5", b"{192.0.2.0/24 OK}, {::/0 REJECT}")]


def texthash() -> list[bytes]:
    src = (b"# access table\nuser@example.com OK\nexample.com REJECT go away\n"
           b"\"quoted key\" value\nkey\\ with\\ escapes value\nlong value\n"
           b"  continued on the next line\n@example.org DISCARD\n")
    return [_table(0, b"example.com", src), _table(3, b"USER@EXAMPLE.COM", src)]


def cdb() -> list[bytes]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.cdb")
        for records in ({b"user@example.com": b"OK", b"example.com": b"REJECT"},
                        {f"k{i}".encode(): f"v{i}".encode() for i in range(40)},
                        {b"a\0": b"b\0"}):
            write_cdb(path, records)
            with open(path, "rb") as fh:
                out.append(_table(8, next(iter(records)), fh.read()))
    return out


def aliases() -> list[bytes]:
    return [b"\x00" + b"postmaster: root\nroot: admin, \"|/usr/bin/prog arg\"\n"
            b"list: :include:/etc/list, /var/mail/archive,\n  other@example.com\n"
            b"\"quoted name\": user\\@x, (comment) a@b <c@d>\n# comment\n",
            b"\x01" + b"\xc3\xa9t\xc3\xa9: u\nbad line\nx@y: z\n"]


def saslauthd() -> list[bytes]:
    return [b"\x00" + saslauthd_request("user", "secret", "smtp", "example.com"),
            b"\x06" + saslauthd_request("u", "p", "smtp", ""),
            b"\x00" + encode_reply(True, "Success"), b"\x00" + encode_reply(False, "Bad")]


def dovecot_auth() -> list[bytes]:
    hs = (b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
          b"MECH\tCRAM-MD5\tdictionary\tactive\nMECH\tEXTERNAL\tprivate\n"
          b"SPID\t1234\nCUID\t5\nCOOKIE\tabcdef\nDONE\n")
    replies = (b"CONT\t1\tVXNlcm5hbWU6\nOK\t1\tuser=joe\tresp=\nFAIL\t2\treason=bad\\tpass\ttemp\n"
               b"FAIL\t3\tcode=temp_fail\nOK\t4\tuser=x\\ty\n")
    return [b"\x00" + hs + replies, b"\x0a" + hs + replies, b"\x00" + b"VERSION\t2\t0\n",
            b"\x00" + hs + "OK\t\u00b2\n".encode()]  # a digit int() refuses


def policy() -> list[bytes]:
    return [b"\x00" + b"action=DUNNO\n\n", b"\x04" + b"action=REJECT no way\nextra=1\n\n",
            b"\x03" + encode_request({"request": "smtpd_access_policy", "sender": "a@b"}),
            b"\x00" + b"action=PREPEND X-Policy: \xff\xfe\n\nleftover"]


def milter() -> list[bytes]:
    neg = M.encode_packet("O", struct.pack(">III", 6, M.MTA_ACTIONS, 0x1FFFFF)
                          + struct.pack(">I", 1) + b"j {client_addr}\0")
    eom = (M.encode_packet("h", b"X-Milter\0yes\0")
           + M.encode_packet("i", struct.pack(">I", 1) + b"X-First\0v\0")
           + M.encode_packet("m", struct.pack(">I", 0) + b"Subject\0new\0")
           + M.encode_packet("+", b"<new@example.com>\0")
           + M.encode_packet("-", b"<old@example.com>\0")
           + M.encode_packet("e", b"<from@example.com>\0SIZE=10\0")
           + M.encode_packet("b", b"new body\r\n") + M.encode_packet("q", b"held\0")
           + M.encode_packet("p") + M.encode_packet("a"))
    return [b"\x00\x09" + neg + eom,  # event E (end of message)
            b"\x00\x00" + neg + M.encode_packet("y", b"550 5.7.1 %% rejected\0"),
            b"\x01\x03" + M.encode_packet("c") + M.encode_packet("t")
            + M.encode_packet("d") + M.encode_packet("y", b"451 4.7.1 later\0")]


def proxy_protocol() -> list[bytes]:
    v4 = ProxyHeader(1, "PROXY", "tcp4", "192.0.2.1", 12345, "198.51.100.1", 25)
    v6 = ProxyHeader(2, "PROXY", "tcp6", "2001:db8::1", 1, "2001:db8::2", 587)
    unix = ProxyHeader(2, "PROXY", "unix", "/run/client", None, "/run/server", None)
    return [b"\x01" + encode_v1(v4) + b"EHLO x\r\n", b"\x01" + encode_v2(v6),
            b"\x01" + encode_v2(unix, b"\x04\x00\x01x"), b"\x01" + encode_v2(ProxyHeader.local()),
            b"\x03" + b"PROXY UNKNOWN\r\n", b"\x01" + encode_v1(v4.__class__(
                1, "PROXY", "tcp6", "::1", 1, "::1", 2))]


def attr() -> list[bytes]:
    return [b"\x00" + encode(Attrs.of(request="deliver", queue_id="4F2A3B1C0D",
                                      recipient=["a@b", "c@d"], flags=3))
            + encode(Attrs.of(status="0", reason="line\nwith\\escapes")),
            b"\x06" + b"a=1\nb=\\n\n\n"]


def queuefile() -> list[bytes]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = QueueStore(tmp)
        store.ensure_layout()
        for n, content in ((1, b"Subject: hi\n\nbody\n"),
                           (3, b"From: a@b\nSubject: x\n\n" + b"long line " * 2000 + b"\n.\n"),
                           (2, b"")):
            env = Envelope(sender="sender@example.com",
                           recipients=[Recipient(f"r{i}@example.org", f"R{i}@example.org",
                                                 frozenset({"SUCCESS"}) if i % 2 else frozenset(),
                                                 "rfc822;x@example.org" if i % 2 else "")
                                       for i in range(n)],
                           ret="HDRS", envid="ENV-1", attributes={"log_client_name": "c.example"},
                           full_name="Sender Name")
            writer = store.create()
            writer.write_envelope(env)
            writer.write_content(content)
            qid = writer.commit()
            qf = store.open(store.find(qid) or "incoming", qid, writable=False)
            try:
                with open(qf.path, "rb") as fh:
                    out.append(b"\x00" + fh.read())
            finally:
                qf.close()
    return out


def sqlite() -> list[bytes]:
    # option byte: bit 0 = the input is a key for the fixed query
    return [b"\x00query = SELECT v FROM t WHERE k='%s'\n",
            b"\x02query = SELECT v FROM t WHERE k='%u' OR k='%d'\nresult_format = %s-%U@%D\n"
            b"domain = example.com\nexpansion_limit = 2\n",
            b"\x00query = SELECT v FROM t WHERE k IN ('%s', '%1', '%2', '%[3]')\n"
            b"result_format = %S\n",
            b"\x00select_field = v\ntable = t\nwhere_field = k\nadditional_conditions = AND 1=1\n",
            b"\x01o'brien@example.com", b"\x01user@example.com' OR '1'='1", b"\x01\x00user"]


TARGETS = {
    "smtpd": smtpd, "smtp_client": smtp_client, "maincf": maincf, "mastercf": mastercf,
    "regexp": regexp, "pcre": pcre, "cidr": cidr, "texthash": texthash, "cdb": cdb,
    "aliases": aliases, "saslauthd": saslauthd, "dovecot_auth": dovecot_auth,
    "policy": policy, "milter": milter, "proxy_protocol": proxy_protocol, "attr": attr,
    "queuefile": queuefile, "sqlite": sqlite,
}


def main() -> None:
    for target, make in TARGETS.items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for seed in make():
            name = hashlib.sha1(seed).hexdigest()[:16]
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(seed)


if __name__ == "__main__":
    main()
