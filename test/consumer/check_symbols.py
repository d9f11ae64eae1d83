#!/usr/bin/env python3
"""Checks the dynamic symbols a shared libloopsvc exports.

usage: check_symbols.py NM LIBRARY HEADER

Fails, naming them, on
  - any defined dynamic symbol whose name does not start with lsvc_ (the
    library is built with -fvisibility=hidden; anything else leaked);
  - an LSVC_API function of HEADER that the library does not export;
  - an exported lsvc_ symbol that HEADER does not declare with LSVC_API;
and when it finds no lsvc_ symbol at all, so that it cannot pass by
reading nothing.
"""
import re
import subprocess
import sys


def exported(nm, library):
    """Names of the defined dynamic symbols, as nm -D --defined-only lists
    them: 'ADDRESS TYPE NAME', NAME perhaps with an @VERSION suffix."""
    try:
        out = subprocess.run([nm, "-D", "--defined-only", library],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.exit(f"{nm} -D --defined-only {library}: {e}")
    if out.returncode != 0:
        sys.exit(f"{nm} -D --defined-only {library} failed "
                 f"({out.returncode}):\n{out.stderr}")
    names = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            sys.exit(f"{nm}: unexpected line {line!r}")
        # No address for some symbols (absolute, version nodes): TYPE NAME.
        kind, name = fields[-2], fields[-1]
        names[name.split("@")[0]] = kind
    return names


def declared(header):
    """Names of the functions HEADER declares with LSVC_API."""
    with open(header, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)   # comments
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)  # directives
    names = []
    for m in re.finditer(r"\bLSVC_API\b([^;{}]*?)\b([A-Za-z_]\w*)\s*\(", text):
        names.append(m.group(2))
    return names


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    nm, library, header = argv[1:]
    syms = exported(nm, library)
    decl = declared(header)
    failures = []

    stray = sorted(n for n in syms if not n.startswith("lsvc_"))
    if stray:
        failures.append("exported symbols without the lsvc_ prefix (hide them: "
                        "static, or no LSVC_API):\n" +
                        "\n".join(f"  {syms[n]} {n}" for n in stray))
    ours = {n for n in syms if n.startswith("lsvc_")}
    if not ours:
        failures.append(f"{library} exports no lsvc_ symbol at all")
    if not decl:
        failures.append(f"{header} declares no LSVC_API function")
    dupes = sorted({n for n in decl if decl.count(n) > 1})
    if dupes:
        failures.append(f"{header} declares these more than once: {', '.join(dupes)}")
    missing = sorted(set(decl) - ours)
    if ours and missing:
        failures.append(f"declared with LSVC_API in {header} but not exported "
                        "(not implemented, or not marked LSVC_API where defined):\n" +
                        "\n".join(f"  {n}" for n in missing))
    extra = sorted(ours - set(decl))
    if extra:
        failures.append(f"exported but not declared with LSVC_API in {header}:\n" +
                        "\n".join(f"  {syms[n]} {n}" for n in extra))
    not_code = sorted(n for n in ours & set(decl) if syms[n] not in ("T", "W", "i"))
    if not_code:
        failures.append("declared as functions but exported as something else:\n" +
                        "\n".join(f"  {syms[n]} {n}" for n in not_code))

    if failures:
        print(f"{library}:", file=sys.stderr)
        for f in failures:
            print(f"FAIL: {f}", file=sys.stderr)
        sys.exit(1)
    print(f"{library}: exports exactly the {len(ours)} LSVC_API functions of {header}")


if __name__ == "__main__":
    main(sys.argv)
