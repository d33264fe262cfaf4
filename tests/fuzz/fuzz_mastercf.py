"""Fuzz master.cf reading (hato.config.mastercf).

The input is a master.cf file. It is parsed as ``hato`` parses it; every
entry's fields are read the way master and ``postconf -M/-F/-P`` read them
(flags, wakeup, maxproc, ``-o`` overrides, the inet endpoint), the entries
are formatted (folded and not) and the file is edited and re-read. The
documented error for a bad file is ConfigError; anything else escaping is
a crash. Checks: formatting an entry (whose fields have balanced braces) and
parsing it again gives the same fields; an edit survives a render and re-parse.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, instrumented, run

with instrumented():
    from hato.config.errors import ConfigError
    from hato.config.mastercf import MasterCf, daemon_options, parse_entry, split_args


def _editable(svc) -> bool:
    """An entry ``postconf -P`` can edit exactly: balanced braces, and every
    ``-o`` followed by a name=value (a dangling ``-o`` swallows what comes
    after it, in Postfix too)."""
    return all(f.count("{") == f.count("}") for f in svc.fields) and all(
        opt != "-o" or (value is not None and "=" in value and not value.startswith("-"))
        for opt, value in daemon_options(svc.args)[0])


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    text = inp.rest()
    try:
        master = MasterCf.parse(text)
    except ConfigError:
        return
    for svc in master.services[:20]:
        svc.key, svc.command, svc.args, svc.overrides()
        svc.private(), svc.unprivileged(), svc.chroot()
        svc.wakeup()
        svc.maxproc(100)
        if svc.type == "inet":
            try:
                svc.endpoint("/dev/null")
            except ConfigError:
                pass
        # A field with unbalanced braces (a warning when read) has no exact
        # written form; every other entry must survive format and re-parse.
        balanced = all(f.count("{") == f.count("}") for f in svc.fields)
        for fold in (False, True) if balanced else ():
            formatted = svc.format(fold=fold)
            # (joined as master.cf's reader joins continuation lines: at
            # newlines, trimmed of C's whitespace; Python's splitlines() and
            # strip() would also take \x1c-\x1f, which may be a field)
            again = parse_entry(" ".join(line.strip(" \t\n\v\f\r")
                                         for line in formatted.split("\n")))
            if again != svc.fields:
                raise AssertionError(f"format/parse changed {svc.fields!r} to {again!r}")
        split_args(" ".join(svc.args))
    if master.services and opts & 1 and _editable(master.services[0]):
        svc = master.services[0]
        master.set_param(svc.name, svc.type, "hato_fuzz", "1")
        master.set_field(svc.name, svc.type, 6, "7")
        again = MasterCf.parse(master.render())
        found = again.find(svc.name, svc.type)
        if not found or found[0].overrides().get("hato_fuzz") != "1":
            raise AssertionError("postconf -P edit lost")
    if master.services and opts & 2:
        svc = master.services[-1]
        master.comment_out(svc.name, svc.type)
        if master.services:
            master.remove(master.services[0].name, master.services[0].type)
        MasterCf.parse(master.render())


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()
