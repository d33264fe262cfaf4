"""Property tests: ``$name`` expansion is idempotent (hypothesis).

Expanding a value that is already fully expanded changes nothing: the
result of an expansion, with its literal ``$`` written as ``$$`` again (as
``postconf -x`` output would have to be to be read back), expands to
itself; and a result without ``$`` is a fixed point. The same holds for
every parameter of a main.cf through Settings.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from hato.config.defaults import HostFacts
from hato.config.errors import ConfigError
from hato.config.expand import Expander, expand
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config

FAST = settings(max_examples=150, deadline=None)

NAMES = ["alpha", "beta", "gamma", "empty", "undefined_one"]
literal = st.text(alphabet="abc xyz,.:-_/{}?=<>!01", max_size=6)
ref = st.sampled_from(NAMES).flatmap(lambda n: st.sampled_from([
    f"${n}", f"${{{n}}}", f"$({n})", f"${{{n}?yes}}", f"${{{n}:no}}", f"${{{n}?{{a b}}:{{c}}}}",
    f"${{{{${n}}} == {{x}}?{{same}}:{{other}}}}", "$$"]))
template = st.lists(st.one_of(literal, ref), max_size=6).map("".join)
# values refer only to names later in the list: no loops
VALUES = {"alpha": "A-$beta", "beta": "B${gamma?-g}", "gamma": "x $$y", "empty": ""}


@FAST
@given(template)
def test_expansion_is_idempotent(text):
    try:
        once = expand(text, VALUES.get)
    except ConfigError:
        return  # not valid macro text (e.g. "$" before a brace-less word)
    assert expand(once.replace("$", "$$"), VALUES.get) == once
    if "$" not in once:
        assert expand(once, VALUES.get) == once
        assert Expander(VALUES.get, recurse=False).expand(once) == once


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["myorigin", "mydestination", "relayhost",
                                        "smtpd_banner", "hato_extra", "alias_maps"]),
                       template, max_size=5))
def test_settings_expansion_is_idempotent(params):
    text = "".join(f"{k} = {v}\n" for k, v in params.items())
    config = Config("/etc/hato", MainCf.parse(text), MasterCf.parse(b""),
                    HostFacts("mail.example.com"), explicit_dir=False)
    s = config.settings()
    for name in params:
        try:
            value = s.expanded(name)
        except ConfigError:
            continue
        again = config.settings(overrides={name: value.replace("$", "$$")})
        assert again.expanded(name) == value
