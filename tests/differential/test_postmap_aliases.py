"""hato postalias / newaliases against Debian's Postfix 3.7 postalias."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.differential.test_postmap_lookups import LETTERS, _recase, _word, config, hato, postfix

pytestmark = pytest.mark.differential

FIXED = """\
# comment
Postmaster: root
root: Admin@Example.COM, "|/usr/bin/cmd arg", /var/log/file,
   :include:/etc/list
"a b": x
"Quoted\\"Name": y
webmaster : root
multi:\ta,
\tb,  c
dup: one
DUP: two
nocolon value
:empty: z
"unterminated: x
joe:
user@dom: x
us%er: x
"e,f": g
a\\:b: c
\\|pipe: a
esc: \\"quoted, a\\\\b, "q\\"x", "a\\\\b"
semi: a:b:c
cmt: b (comment here) c
lit: "x y"@example.com, x\\,y, [1.2.3.4], <foo@bar>, Joe <joe@x>
ops: a;b, a.b , @x:y@z
Grüße: ü@example.com
"""


def random_aliases(rng: random.Random, n: int = 400) -> tuple[str, list[str]]:
    lines, names = [], []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            lines.append("# " + _word(rng, 1, 20))
            continue
        name = _word(rng, 1, 10, LETTERS + "0123456789-._")
        if rng.random() < 0.05:
            name = f'"{name} {_word(rng, 1, 4)}"'
        names.append(name.strip('"'))
        targets = []
        for _ in range(rng.randint(1, 5)):
            t = rng.random()
            if t < 0.4:
                targets.append(f"{_word(rng, 1, 8)}@{_word(rng, 2, 6)}.Org")
            elif t < 0.55:
                targets.append(f'"|/usr/bin/{_word(rng, 1, 6)} -{_word(rng, 1, 2)}"')
            elif t < 0.65:
                targets.append(f"/var/mail/{_word(rng, 1, 6)}")
            elif t < 0.75:
                targets.append(f":include:/etc/{_word(rng, 1, 6)}")
            else:
                targets.append(_word(rng, 1, 8))
        value = ""
        for i, target in enumerate(targets):
            sep = rng.choice([", ", ",", " , ", ",\n\t", ",\n    "]) if i else ""
            value += sep + target
        colon = rng.choice([":", ": ", " : ", ":\t"])
        lines.append(f"{name}{colon}{value}")
    return "\n".join(lines) + "\n", names


def _dump(conf: str, spec: str) -> list[bytes]:
    out = postfix("postalias", "-c", conf, "-s", spec).stdout.splitlines()
    return sorted(line for line in out if not line.startswith(b"YP_LAST_MODIFIED"))


@pytest.mark.parametrize("type_name", ["lmdb", "cdb"])
@pytest.mark.parametrize("utf8", [False, True], ids=["ascii", "utf8"])
def test_postalias_same_records_and_answers(tmp_path, type_name, utf8):
    conf = str(config(tmp_path, utf8))
    (Path(conf) / "main.cf").write_text((Path(conf) / "main.cf").read_text()
                                        + "myhostname = mx.example.com\n")
    rng = random.Random(f"aliases-{type_name}-{utf8}")
    text, names = random_aliases(rng)
    text = FIXED + text
    names += ["postmaster", "root", "a b", 'quoted"name', "dup", "e,f", "a:b", "|pipe", "@",
              "YP_MASTER_NAME", "grüße", "GRÜSSE"]
    sides = {}
    for side in ("pf", "hato"):
        d = tmp_path / side
        d.mkdir()
        (d / "aliases").write_text(text)
        spec = f"{type_name}:{d}/aliases"
        run = postfix("postalias", "-c", conf, spec) if side == "pf" else \
            hato("-c", conf, spec, prog="postalias")
        sides[side] = (d, spec, run)
    (pf_dir, pf_spec, pf_run), (h_dir, h_spec, h_run) = sides["pf"], sides["hato"]
    assert h_run.returncode == pf_run.returncode == 0
    assert h_run.stderr.replace(str(h_dir) + "/", "") == pf_run.stderr.replace(
        str(pf_dir) + "/", "")
    if type_name == "lmdb":
        assert _dump(conf, h_spec) == _dump(conf, pf_spec)

    queries = []
    while len(queries) < 2000:
        queries.append(_recase(rng, rng.choice(names)) if rng.random() < 0.8
                       else _word(rng, 1, 10))
    stdin = ("\n".join(queries) + "\n").encode()
    ref = postfix("postalias", "-c", conf, "-q", "-", pf_spec, input=stdin)
    assert ref.returncode == 0 and ref.stdout.count(b"\n") > 1000
    for how, res in (("hato on hato", hato("-c", conf, "-q", "-", h_spec, input=stdin,
                                           prog="postalias")),
                     ("postfix on hato", postfix("postalias", "-c", conf, "-q", "-", h_spec,
                                                 input=stdin)),
                     ("hato on postfix", hato("-c", conf, "-q", "-", pf_spec, input=stdin,
                                              prog="postalias"))):
        assert (res.returncode, res.stdout) == (ref.returncode, ref.stdout), how


def test_newaliases_builds_alias_database(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (tmp_path / "aliases").write_text("Root: admin\npostmaster: root\n")
    (tmp_path / "more").write_text("abuse: root, x@example.org\n")
    (conf / "main.cf").write_text(
        f"alias_database = lmdb:{tmp_path}/aliases, cdb:{tmp_path}/more\n"
        f"alias_maps = $alias_database\n")
    res = hato("-c", str(conf), prog="newaliases")
    assert res.returncode == 0, res.stderr
    pf = postfix("postalias", "-c", str(conf), "-q", "root", f"lmdb:{tmp_path}/aliases")
    assert pf.stdout == b"admin\n"
    pf = postfix("postalias", "-c", str(conf), "-q", "abuse", f"cdb:{tmp_path}/more")
    assert pf.stdout == b"root, x@example.org\n"
    # the default type comes from default_database_type
    (conf / "main.cf").write_text(f"alias_database = {tmp_path}/aliases\n"
                                  "default_database_type = cdb\n")
    assert hato("-c", str(conf), prog="newaliases").returncode == 0
    assert (tmp_path / "aliases.cdb").exists()


def test_postalias_incremental_and_delete(tmp_path):
    conf = str(config(tmp_path, False))
    res = {}
    for side in ("pf", "hato"):
        d = tmp_path / side
        d.mkdir()
        (d / "aliases").write_text("a: b\nc: d\n")
        spec = f"lmdb:{d}/aliases"

        def run(*args, input=b"", side=side):
            if side == "pf":
                return postfix("postalias", "-c", conf, *args, input=input)
            return hato("-c", conf, *args, input=input, prog="postalias")

        steps = [run(spec), run("-i", spec, input=b"E: f, g\nc: x\nbad\n"),
                 run("-d", "A", spec), run("-q", "e", spec), run("-q", "a", spec)]
        dump = [line for line in postfix("postalias", "-c", conf, "-s", spec).stdout
                .splitlines() if not line.startswith(b"YP_LAST")]
        res[side] = ([(r.returncode, r.stdout, r.stderr.replace(str(d) + "/", ""))
                      for r in steps], sorted(dump))
    assert res["hato"] == res["pf"]
