"""Fuzz main.cf reading and ``$name`` expansion (hato.config.maincf,
hato.config.expand, hato.config.settings).

The input is a main.cf file. It is parsed as ``hato`` parses it, then
every parameter it sets is expanded against main.cf and the defaults
(Settings.expanded), checked by its type (Settings.check), scanned for
references (referenced_names, Config.syntax_errors) and the file is edited
and rendered as ``postconf -e``/``-X`` do. The documented error for bad
configuration is ConfigError (ExpandError, ExpansionLoop are kinds of it);
anything else escaping is a crash. Expansion loops must be ExpansionLoop,
never a RecursionError.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, instrumented, run

with instrumented():
    from hato.config.defaults import HostFacts
    from hato.config.errors import ConfigError
    from hato.config.expand import Expander, referenced_names
    from hato.config.maincf import MainCf
    from hato.config.mastercf import MasterCf
    from hato.config.settings import Config

_FACTS = HostFacts("mail.example.com", ipv4=(("192.0.2.1", 24),))
_MASTER = MasterCf.parse(b"smtp inet n - n - - smtpd\n")


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    text = inp.rest()
    try:
        main = MainCf.parse(text)
    except ConfigError:
        return
    config = Config("/etc/hato", main, _MASTER, _FACTS, explicit_dir=bool(opts & 1))
    values = main.values()
    config.syntax_errors()
    config.undefined_references()
    settings = config.settings()
    for name, value in list(values.items())[:50]:
        referenced_names(value)
        try:
            referenced_names(value, strict=True)
        except ConfigError:
            pass
        try:
            settings.expanded(name)
        except ConfigError:
            continue
        try:
            settings.check(name)
        except ConfigError:
            pass
        try:
            Expander(values.get, recurse=bool(opts & 2)).expand(value)
        except ConfigError:
            pass
    names = list(values)
    if names and opts & 4:
        main.set(names[0], "edited value")
        main.comment_out(names[-1])
        main.remove(names[len(names) // 2])
        main.set("hato_fuzz_parameter", "yes")
        again = MainCf.parse(main.render())
        if again.values().get("hato_fuzz_parameter") != "yes":
            raise AssertionError("postconf -e edit lost")


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()
