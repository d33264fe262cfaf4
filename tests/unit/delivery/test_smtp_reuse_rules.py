"""Which sessions the smtp agent keeps for reuse: on demand (qmgr's
CONN_LOAD) or for smtp_connection_cache_destinations; TLS sessions only with
smtp_tls_connection_reuse; never a session authenticated for one sender."""

from __future__ import annotations

from hato.delivery.request import DeliveryRequest
from hato.io import smtp_delivery as D
from hato.io.smtp_conncache import ConnectionCache
from hato.policy.smtp_route import Candidate

MX = Candidate("mx.example.org", "192.0.2.1", 25, 10)


class Conn:
    def __init__(self, tls=False, auth=False, closed=False):
        self.tls_active, self.authenticated, self.closed = tls, auth, closed
        self.messages = 1


def agent(*, on_demand=True, destinations=(), tls_reuse=False, sender_dependent=False):
    a = object.__new__(D.SmtpDelivery)
    a.cache = ConnectionCache(close=lambda s: None)
    a.cache_on_demand = on_demand
    a.cache_destinations = frozenset(destinations)
    a.tls_reuse = tls_reuse
    a.sender_dependent = sender_dependent
    return a


def req(nexthop="example.org", flags=()):
    return DeliveryRequest("active", "QID", "smtp", nexthop, "s@example.com", 1.0, 2.0,
                           flags=frozenset(flags))


def keys(a):
    return [s.keys for s in a.cache._sessions]


def test_on_demand_needs_the_conn_load_flag():
    a = agent()
    assert not a._save("sock", Conn(), MX, req(), 0.0)
    assert a._save("sock", Conn(), MX, req(flags={"CONN_LOAD"}), D.time.monotonic())
    assert keys(a) == [("dest:example.org", "addr:192.0.2.1:25/example.org")]
    off = agent(on_demand=False)
    assert not off._save("sock", Conn(), MX, req(flags={"CONN_LOAD"}), D.time.monotonic())


def test_cache_destinations_always():
    a = agent(on_demand=False, destinations={"[relay.example]:587"})
    assert a._save("sock", Conn(), MX, req("[relay.example]:587"), D.time.monotonic())
    assert not a._save("sock", Conn(), MX, req("other.example"), D.time.monotonic())


def test_tls_sessions_only_with_tls_connection_reuse_and_bound_to_the_next_hop():
    now = D.time.monotonic()
    assert not agent()._save("sock", Conn(tls=True), MX, req(flags={"CONN_LOAD"}), now)
    a = agent(tls_reuse=True)
    assert a._save("sock", Conn(tls=True), MX, req(flags={"CONN_LOAD"}), now)
    assert keys(a) == [("dest:example.org", "addr:192.0.2.1:25/example.org")]


def test_sender_dependent_authentication_is_never_cached():
    now = D.time.monotonic()
    assert not agent(sender_dependent=True)._save("sock", Conn(auth=True), MX,
                                                  req(flags={"CONN_LOAD"}), now)
    a = agent()
    assert a._save("sock", Conn(auth=True), MX, req(flags={"CONN_LOAD"}), now)
    assert keys(a) == [("dest:example.org", "addr:192.0.2.1:25/example.org")]


def test_closed_session_is_not_cached():
    assert not agent()._save("sock", Conn(closed=True), MX, req(flags={"CONN_LOAD"}),
                             D.time.monotonic())


def test_flags_travel_in_the_request():
    r = req(flags={"CONN_LOAD"})
    assert DeliveryRequest.decode(r.encode()).flags == frozenset({"CONN_LOAD"})
    assert DeliveryRequest.decode(req().encode()).flags == frozenset()


def test_lmtp_reads_its_own_parameters():
    """lmtp_line_length_limit, lmtp_discard_lhlo_keywords and
    lmtp_sasl_auth_soft_bounce, not their smtp_ forms."""
    from tests.unit.policy.conftest import make_settings

    s = make_settings("lmtp_line_length_limit = 500\nlmtp_discard_lhlo_keywords = pipelining\n"
                      "lmtp_sasl_auth_soft_bounce = no\nsmtp_line_length_limit = 700\n"
                      "smtp_discard_ehlo_keywords = dsn\n")
    lmtp = D.SmtpDelivery(s, None, lmtp=True, router=None)
    smtp = D.SmtpDelivery(s, None, lmtp=False, router=None)
    assert (lmtp.line_limit, lmtp.discard, lmtp.auth_soft_bounce) == \
        (500, frozenset({"PIPELINING"}), False)
    assert (smtp.line_limit, smtp.discard, smtp.auth_soft_bounce) == \
        (700, frozenset({"DSN"}), True)


def test_a_session_never_serves_another_next_hop():
    """Next hop b.example may require TLS where a.example does not: the
    plaintext session a.example left with the shared server is not b's."""
    a = agent()
    assert a._save("sock", Conn(), MX, req("a.example", {"CONN_LOAD"}), D.time.monotonic())
    assert a.cache.take(a._endpoint_key(MX, req("b.example"))) is None
    assert a.cache.take(a._dest_key(req("b.example"))) is None
    assert a.cache.take(a._endpoint_key(MX, req("a.example"))) is not None
