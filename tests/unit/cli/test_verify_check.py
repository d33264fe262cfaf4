"""``hato check`` and address verification: no "not implemented" for
reject_unverified_*, a warning when master.cf has no verify service, errors
for a cache or probe sender hato cannot use."""

from __future__ import annotations

from tests.hatorun import hato_inprocess

MAIN = ("myhostname = a.example\nalias_maps =\n"
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,\n"
        " reject_unverified_recipient\n")
MASTER = "smtp inet n - n - - smtpd\n"
VERIFY = "verify unix - - n - 1 verify\n"


def check(tmp_path, main: str, master: str):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "main.cf").write_text(main)
    (d / "master.cf").write_text(master)
    return d, hato_inprocess("-c", str(d), "check")


def test_verify_service_present(tmp_path) -> None:
    _d, r = check(tmp_path, MAIN, MASTER + VERIFY)
    assert r.returncode == 0, r.stderr
    assert "reject_unverified_recipient" not in r.stderr, r.stderr
    assert "verify" not in r.stderr, r.stderr


def test_verify_service_missing(tmp_path) -> None:
    d, r = check(tmp_path, MAIN, MASTER)
    assert r.returncode == 0, r.stderr
    assert (f"{d}/main.cf, line 3: reject_unverified_recipient needs the verify service: "
            f"add \"verify unix - - n - 1 verify\" to {d}/master.cf") in r.stderr, r.stderr
    assert "not implemented" not in r.stderr


def test_bad_cache_and_sender(tmp_path) -> None:
    d, r = check(tmp_path, MAIN + "address_verify_map = cdb:/x/verify\n"
                 "address_verify_sender = probe@\n", MASTER + VERIFY)
    assert r.returncode == 1
    assert (f"{d}/main.cf, line 5: address_verify_map = cdb:/x/verify: hato can keep the "
            "address verification cache in btree:, hash: or lmdb: files, not cdb:") in r.stderr
    assert (f"{d}/main.cf, line 6: parameter address_verify_sender: value \"probe@\" must not "
            "end with '@'") in r.stderr, r.stderr
