#!/usr/bin/env python3
"""Writes the README's example program (the ```c block that follows the
line `<!-- example -->`) to a file, so the tests compile what the README
shows."""
import re
import sys

readme, out = sys.argv[1], sys.argv[2]
text = open(readme, encoding="utf-8").read()
match = re.search(r"<!-- example -->\s*```c\n(.*?)```", text, re.S)
if match is None:
    sys.exit(f"{readme}: no ```c block after <!-- example -->")
with open(out, "w", encoding="utf-8") as f:
    f.write(match.group(1))
