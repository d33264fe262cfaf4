"""A small authoritative DNS server for tests: UDP and TCP on 127.0.0.1.

It answers from a dict of names, built with dnspython's message and wire
functions, in background threads, on a free port::

    zones = {
        "example.com": {"MX": ["10 mx.example.com."], "A": ["192.0.2.1"],
                        "TXT": ["v=spf1 -all"], "TTL": 60},
        "www.example.com": {"CNAME": ["example.com."]},
        "4.3.2.1.in-addr.arpa": {"PTR": ["host.example.com."]},
        "slow.example": "TIMEOUT",      # never answered
        "broken.example": "SERVFAIL",   # rcode SERVFAIL (also "REFUSED")
    }
    with DnsServer(zones) as server:
        server.set("example.com", "A", ["192.0.2.2"])
        Resolver([server.address])  ... server.count("example.com", "A")

Rules: names are case-insensitive, with or without the trailing dot; record
texts are in zone-file syntax (names relative to the root, so the trailing
dot is optional); TXT values are the plain strings. An unknown name is
NXDOMAIN, a known name without the asked type is NODATA (both with an SOA
whose minimum is ``negative_ttl``); a CNAME is followed inside the data. A
name's optional "TTL" key sets its records' TTL (``ttl`` otherwise). An
answer too big for UDP is sent truncated (TC), so the client retries over TCP.
``udp_truncate = True`` truncates every UDP answer. Every question received
is counted: ``server.count(name, rtype)``, ``server.queries``.

DNSSEC, as a validating resolver shows it to its clients: names marked
secure (``server.set_secure("mx.example.com")``, ``"*.example.com"`` for
a zone and every name below it, or ``"SECURE": True`` in the name's
records) are answered with the AD bit when the question carries the EDNS
DO flag or the AD flag; an answer through a CNAME is secure only when every
name on the way is. NXDOMAIN and NODATA answers are secure when the name
asked is covered. Nothing is signed: the AD bit is the whole story. TLSA
records are written as in a zone file: ``"3 1 1 <hex>"``.

In pytest, import the fixture into the test module::

    from tests.dnsserver import dns_server  # noqa: F401  (a pytest fixture)

    def test_x(dns_server):
        dns_server.set("example.com", "A", ["192.0.2.1"])
        host, port = dns_server.address

Nothing here listens beyond loopback.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import pytest

Records = Mapping[str, Sequence[str] | int]
Zones = Mapping[str, Records | str]

SPECIAL = ("TIMEOUT", "SERVFAIL", "REFUSED")


def _key(name: str) -> str:
    return name.strip().lower().rstrip(".") or "."


class DnsServer:
    """An authoritative test DNS server; see the module docstring."""

    def __init__(self, zones: Zones | None = None, *, host: str = "127.0.0.1",
                 ttl: int = 300, negative_ttl: int = 300):
        if host not in ("127.0.0.1", "::1"):
            raise ValueError("the test DNS server listens on loopback only")
        self.host = host
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.udp_truncate = False
        self._lock = threading.Lock()
        self._names: dict[str, dict[str, list[str]] | str] = {}
        self._ttls: dict[str, int] = {}
        self._secure: set[str] = set()  # names, and "*.zone" patterns
        self.queries: list[tuple[str, str, str]] = []  # (name, type, "udp"|"tcp")
        self.errors: list[Exception] = []  # exceptions while answering (bad records)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self.port = 0
        for name, value in (zones or {}).items():
            self.load_name(name, value)

    # -- data -----------------------------------------------------------------

    def load_name(self, name: str, value: Records | str) -> None:
        """Replace everything known about *name*."""
        key = _key(name)
        with self._lock:
            self._ttls.pop(key, None)
            if isinstance(value, str):
                if value not in SPECIAL:
                    raise ValueError(f"{name}: unknown behaviour {value!r}")
                self._names[key] = value
                return
            records: dict[str, list[str]] = {}
            self._secure.discard(key)
            for rtype, values in value.items():
                if rtype.upper() == "TTL":
                    self._ttls[key] = int(values)  # type: ignore[arg-type]
                    continue
                if rtype.upper() == "SECURE":
                    if values:
                        self._secure.add(key)
                    continue
                if isinstance(values, (str, int)):
                    raise TypeError(f"{name}/{rtype}: give a list of records")
                records[rtype.upper()] = [str(v) for v in values]
            self._names[key] = records

    def set(self, name: str, rtype: str, values: Sequence[str] | str) -> None:
        """Set *name*'s records of *rtype* (an empty list leaves the name
        known, without that type: NODATA). *values* may instead be
        "TIMEOUT", "SERVFAIL" or "REFUSED" for the whole name."""
        if isinstance(values, str):
            self.load_name(name, values)
            return
        key = _key(name)
        with self._lock:
            current = self._names.get(key)
            if not isinstance(current, dict):
                current = {}
                self._names[key] = current
            current[rtype.upper()] = [str(v) for v in values]

    def delete(self, name: str, rtype: str | None = None) -> None:
        """Forget *name* (then NXDOMAIN), or only its records of *rtype*."""
        key = _key(name)
        with self._lock:
            if rtype is None:
                self._names.pop(key, None)
                self._ttls.pop(key, None)
            elif isinstance(self._names.get(key), dict):
                self._names[key].pop(rtype.upper(), None)  # type: ignore[union-attr]

    def set_secure(self, name: str, secure: bool = True) -> None:
        """Mark *name* (or, written ``*.zone``, the zone and every name
        below it) DNSSEC-secure: its answers get the AD bit when asked with
        DO or AD. ``secure=False`` takes the mark back."""
        key = name.strip().lower().rstrip(".")
        key = "*." + _key(key[2:]) if key.startswith("*.") else _key(key)
        with self._lock:
            if secure:
                self._secure.add(key)
            else:
                self._secure.discard(key)

    def is_secure(self, name: str) -> bool:
        """Is *name* marked secure, itself or by a ``*.zone`` pattern?"""
        key = _key(name)
        with self._lock:
            return self._covered(key)

    def _covered(self, key: str) -> bool:
        if key in self._secure:
            return True
        labels = key.split(".")
        return any("*." + ".".join(labels[i:]) in self._secure for i in range(len(labels)))

    def count(self, name: str | None = None, rtype: str | None = None) -> int:
        """How many questions arrived (for *name* / *rtype* when given)."""
        key = _key(name) if name is not None else None
        with self._lock:
            return sum(1 for n, t, _ in self.queries
                       if (key is None or n == key) and (rtype is None or t == rtype.upper()))

    def reset_counts(self) -> None:
        with self._lock:
            self.queries.clear()

    # -- running ----------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def spec(self) -> str:
        """The server as a hato_dns_servers item: ``127.0.0.1:PORT``."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self, want: int = 0) -> DnsServer:
        """Listen on port *want* (a free one when 0: a stopped server comes
        back where it was with ``start(server.port)``)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _attempt in range(1 if want else 50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, want))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError("no free port for the test DNS server")
        tcp.listen(16)
        udp.settimeout(0.1)
        tcp.settimeout(0.1)
        self._udp, self._tcp, self.port = udp, tcp, port
        self._stop.clear()
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, name=f"dnsserver-{port}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in list(self._threads):
            t.join(timeout=5)
        self._threads.clear()
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        self._udp = self._tcp = None

    def __enter__(self) -> DnsServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        sock = self._udp
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._answer(data, "udp")
            if reply is not None:
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                conn, _peer = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve_conn(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65535)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 2:
                    (length,) = struct.unpack("!H", buf[:2])
                    if len(buf) < 2 + length:
                        break
                    data, buf = buf[2:2 + length], buf[2 + length:]
                    reply = self._answer(data, "tcp")
                    if reply is not None:
                        try:
                            conn.sendall(struct.pack("!H", len(reply)) + reply)
                        except OSError:
                            return

    # -- answering ------------------------------------------------------------

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        qname = question.name
        qtype = dns.rdatatype.to_text(question.rdtype)
        key = _key(qname.to_text())
        visited: list[str] = []
        with self._lock:
            self.queries.append((key, qtype, transport))
            try:
                outcome = self._fill(response, qname, question.rdtype, visited)
            except Exception as exc:  # noqa: BLE001  bad test data: answer SERVFAIL, keep serving
                self.errors.append(exc)
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
                outcome = "SERVFAIL"
            secure = outcome in ("OK", "NODATA", "NXDOMAIN") and bool(visited) and \
                all(self._covered(n) for n in visited)
        if outcome == "TIMEOUT":
            return None
        wants_dnssec = bool(query.flags & dns.flags.AD) or (
            query.edns >= 0 and bool(query.ednsflags & dns.flags.DO))
        if query.edns >= 0 and query.ednsflags & dns.flags.DO:
            response.ednsflags |= dns.flags.DO
        if secure and wants_dnssec:
            response.flags |= dns.flags.AD
        if transport == "udp":
            limit = max(512, query.payload if query.edns >= 0 else 512)
            if self.udp_truncate:
                return self._truncated(query)
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                return self._truncated(query)
        return response.to_wire()

    @staticmethod
    def _truncated(query: dns.message.Message) -> bytes:
        tc = dns.message.make_response(query)
        tc.flags |= dns.flags.AA | dns.flags.TC
        tc.flags &= ~dns.flags.RA
        return tc.to_wire()

    def _fill(self, response: dns.message.Message, qname: dns.name.Name,
              rdtype: dns.rdatatype.RdataType, visited: list[str] | None = None) -> str:
        """Put the answer into *response*; returns "TIMEOUT" to stay silent.
        The names passed on the way (CNAMEs) are appended to *visited*."""
        name = qname
        for _hop in range(9):
            key = _key(name.to_text())
            if visited is not None:
                visited.append(key)
            entry = self._names.get(key)
            if isinstance(entry, str):
                if entry == "TIMEOUT":
                    return "TIMEOUT"
                response.set_rcode(dns.rcode.SERVFAIL if entry == "SERVFAIL"
                                   else dns.rcode.REFUSED)
                response.answer.clear()
                return entry
            if entry is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response)
                return "NXDOMAIN"
            ttl = self._ttls.get(key, self.ttl)
            want = dns.rdatatype.to_text(rdtype)
            cname = entry.get("CNAME")
            if cname and rdtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
                rrset = self._rrset(name, "CNAME", cname[:1], ttl)
                response.answer.append(rrset)
                name = rrset[0].target
                continue
            values = entry.get(want)
            if not values:
                self._add_soa(response)
                return "NODATA"
            response.answer.append(self._rrset(name, want, values, ttl))
            return "OK"
        response.set_rcode(dns.rcode.SERVFAIL)  # a CNAME loop
        return "SERVFAIL"

    def _add_soa(self, response: dns.message.Message) -> None:
        soa = dns.rrset.from_text(
            ".", self.negative_ttl, "IN", "SOA",
            f"ns.test. hostmaster.test. 1 3600 600 86400 {self.negative_ttl}")
        response.authority.append(soa)

    @staticmethod
    def _rrset(name: dns.name.Name, rtype: str, values: Sequence[str],
               ttl: int) -> dns.rrset.RRset:
        rdtype = dns.rdatatype.from_text(rtype)
        rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        for value in values:
            if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF) and not value.startswith('"'):
                raw = value.encode("utf-8")
                chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
                rdata: dns.rdata.Rdata = dns.rdtypes.ANY.TXT.TXT(
                    dns.rdataclass.IN, rdtype, chunks)
            else:
                rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, value,
                                            origin=dns.name.root, relativize=False)
            rrset.add(rdata, ttl)
        return rrset


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A running DnsServer with no names yet; fill it with ``set`` or
    ``load_name``."""
    with DnsServer() as server:
        yield server
