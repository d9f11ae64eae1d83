#!/usr/bin/env python3
"""Cuts the build snippets out of README.md, so that what the tests build is
the text people copy.

A snippet is the fenced block that follows a line
    <!-- snippet: NAME -->
where NAME is a relative path (for example cmake/CMakeLists.txt). Every
snippet is written to OUTDIR/NAME.

usage: extract_snippets.py README.md OUTDIR [NAME...]
Fails if a NAME given is missing, if a NAME appears twice, or if a marker is
not followed by a fenced block.
"""
import os
import re
import sys

MARKER = re.compile(r"^<!-- snippet: (\S+) -->[ \t]*$", re.M)
FENCE = re.compile(r"\n*(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.S | re.M)


def snippets(text, source):
    found = {}
    for m in MARKER.finditer(text):
        name = m.group(1)
        where = f"{source}:{text.count(chr(10), 0, m.start()) + 1}"
        if os.path.isabs(name) or ".." in name.split("/"):
            sys.exit(f"{where}: snippet name {name!r} must be a relative path inside the project")
        if name in found:
            sys.exit(f"{where}: snippet {name!r} appears twice")
        block = FENCE.match(text, m.end())
        if block is None:
            sys.exit(f"{where}: no fenced block right after the snippet marker {name!r}")
        found[name] = block.group(2)
    return found


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    readme, outdir, wanted = argv[1], argv[2], argv[3:]
    with open(readme, encoding="utf-8") as f:
        found = snippets(f.read(), readme)
    missing = [n for n in wanted if n not in found]
    if missing:
        sys.exit(f"{readme}: no snippet named {', '.join(missing)} "
                 f"(found: {', '.join(sorted(found)) or 'none'})")
    for name, body in found.items():
        path = os.path.join(outdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(body)


if __name__ == "__main__":
    main(sys.argv)
