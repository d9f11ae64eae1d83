#!/usr/bin/env python3
"""Checks the manual page generated from include/loopsvc.h.

Usage: check-man.py --groff GROFF --generator gen-man.py HEADER PAGE

- groff renders PAGE with `-man -ww` (every warning) and prints none;
- every LSVC_API function of HEADER, found here with a parser of its own,
  appears in the rendered SYNOPSIS and again in the text after it;
- gen-man.py refuses a copy of HEADER where a function has lost its doc
  comment, or its statement of what it returns.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

failures = []


def fail(message):
    failures.append(message)
    print("FAIL: " + message)


def api_functions(header):
    """The names of the LSVC_API functions, in order."""
    code = re.sub(r"/\*.*?\*/", " ", header, flags=re.S)
    code = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", code, flags=re.M)
    return re.findall(r"\bLSVC_API\b[^;]*?\b(\w+)\s*\(", code)


def render(groff, page):
    proc = subprocess.run(
        [groff, "-man", "-ww", "-Tutf8", "-P-c", "-P-b", "-P-o", "-P-u", page],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text = proc.stdout.decode("utf-8", "replace")
    warnings = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        fail("groff exited with status %d" % proc.returncode)
    if warnings:
        fail("groff warns about %s:\n%s" % (page, warnings))
    # Undo any hyphenation at the end of a line.
    return re.sub("[\u2010-]\n[ \t]*", "", text)


def check_names(names, text):
    m = re.search(r"^SYNOPSIS\n(.*?)^DESCRIPTION\n(.*)", text, re.S | re.M)
    if m is None:
        fail("no SYNOPSIS followed by DESCRIPTION in the rendered page")
        return
    synopsis, rest = m.group(1), m.group(2)
    for name in names:
        if not re.search(r"\b%s\(" % name, synopsis):
            fail("%s() is not in the SYNOPSIS" % name)
        if not re.search(r"\b%s\(" % name, rest):
            fail("%s() is not described after the SYNOPSIS" % name)


def doc_comment_span(header, name):
    """(start, end) of the comment right before the LSVC_API declaration
    of name."""
    decl = re.search(r"^LSVC_API\b[^;]*?\b%s\s*\(" % name, header, re.M)
    end = header.rfind("*/", 0, decl.start()) + 2
    start = header.rfind("/*", 0, end)
    return start, end


def expect_refusal(generator, header, what, name, mutated):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "loopsvc.h")
        with open(path, "w", encoding="utf-8") as f:
            f.write(mutated)
        proc = subprocess.run([sys.executable, generator, path,
                               os.path.join(tmp, "loopsvc.3")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode == 0:
            fail("gen-man.py accepted a header where %s %s" % (name, what))
        elif name not in err:
            fail("gen-man.py refused a header where %s %s, but its message "
                 "does not name it:\n%s" % (name, what, err))
        elif os.path.exists(os.path.join(tmp, "loopsvc.3")):
            fail("gen-man.py refused a header where %s %s, but wrote a page"
                 % (name, what))


def check_generator(generator, header, names):
    returns = re.compile(r"\b(returns?|returned|gives)\b", re.I)

    # The last function without its doc comment.
    name = names[-1]
    start, end = doc_comment_span(header, name)
    expect_refusal(generator, header, "has no doc comment", name,
                   header[:start] + header[end:].lstrip("\n"))

    # The first function that returns int without a word of what it returns.
    for name in names:
        decl = re.search(r"^LSVC_API\s+int\s+%s\s*\(" % name, header, re.M)
        if decl:
            start, end = doc_comment_span(header, name)
            comment = returns.sub("ends with", header[start:end])
            expect_refusal(generator, header, "does not say what it returns",
                           name, header[:start] + comment + header[end:])
            break


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groff", required=True)
    ap.add_argument("--generator", required=True)
    ap.add_argument("header")
    ap.add_argument("page")
    args = ap.parse_args()

    with open(args.header, encoding="utf-8") as f:
        header = f.read()
    names = api_functions(header)
    if not names:
        fail("no LSVC_API function found in " + args.header)
        return 1

    text = render(args.groff, args.page)
    check_names(names, text)
    check_generator(args.generator, header, names)

    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("ok: %s renders without warnings and shows all %d functions; "
          "gen-man.py refuses undocumented functions" % (args.page, len(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
