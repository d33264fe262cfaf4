"""The shared driver of the table-file harnesses (fuzz_regexp, fuzz_pcre,
fuzz_cidr, fuzz_texthash, fuzz_cdb): write the fuzzer's bytes as a table
file, open it through the registry as a configuration names it
(``type:/path``, or Postfix 3.7's inline ``type:{ {rule}, ... }``), then
look keys up.

Documented outcomes: opening a badly written table raises TableError (a
ConfigError); a lookup returns a string or None, or raises TableRetry (a
temporary failure). Anything else escaping is a crash.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from tests.fuzz.harness import Input, instrumented

with instrumented():
    from hato.tables.base import OpenFlags, TableError, TableRetry
    from hato.tables.registry import open_table

# under tools/fuzz, TMPDIR is in its work directory (libFuzzer exits without
# running atexit handlers)
_DIR = tempfile.mkdtemp(prefix="hato-fuzz-")
atexit.register(shutil.rmtree, _DIR, True)

#: keys every table is asked besides the fuzzer's own
_KEYS = ("user@example.com", "192.0.2.1", "2001:db8::1", "example.com", "", "root",
         "Subject: hello", "[192.0.2.1]", "a" * 300)


def fuzz_table(type_name: str, data: bytes, *, inline: bool = False, suffix: str = "",
               write_source: bool = True) -> None:
    """*data*: option byte, key length byte, key, then the file."""
    inp = Input(data)
    opts = inp.byte()
    klen = inp.byte() % 64
    key = bytes(inp.byte() for _ in range(klen)).decode("utf-8", "surrogateescape")
    body = inp.rest()
    flags = OpenFlags(fold_case=not opts & 1, utf8=bool(opts & 2))
    path = os.path.join(_DIR, type_name)
    if inline and opts & 4:
        spec = "{" + body.decode("utf-8", "surrogateescape") + "}"
    else:
        spec = path
        if suffix:
            if write_source:
                with open(path, "wb") as fh:
                    fh.write(b"")
                os.utime(path, (0, 0))
            path += suffix
        with open(path, "wb") as fh:
            fh.write(body)
    try:
        table = open_table(f"{type_name}:{spec}", flags)
    except TableError:
        return
    try:
        for k in (key, *_KEYS):
            try:
                value = table.get(k)
            except TableRetry:
                continue
            if value is not None and not isinstance(value, str):
                raise AssertionError(f"{type_name} lookup gave {type(value).__name__}")
        if opts & 8 and hasattr(table, "items"):
            try:
                for _ in table.items():
                    pass
            except (TableRetry, TableError):
                pass
    finally:
        table.close()
