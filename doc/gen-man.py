#!/usr/bin/env python3
"""Writes the manual page loopsvc(3) from include/loopsvc.h.

Usage: gen-man.py [--version V] [--readme README.md] HEADER OUTPUT

Everything the page says about the API comes from the header: the file's
top comment (NAME, DESCRIPTION and the return convention), the group
banners (`/* --- Services --- */`), every LSVC_API prototype with the doc
comment right before it, the typedefs with their field comments, the
macros and the environment variables that the doc comments name. The
EXAMPLES section is the README's example program (the ```c block after
`<!-- example -->`), which the test suite compiles and runs.

It fails, naming the file and line, when an LSVC_API function has no doc
comment directly before it, or when the doc comment of a function that
returns a value does not say what it returns (see check_returns).

Only the Python standard library is used.
"""
import argparse
import errno
import os
import re
import sys
import time

PROG = os.path.basename(sys.argv[0])

# Text width of the page, and the indentation of a section's body (man(7)
# defaults for a terminal of 80 columns).
PAGE_WIDTH = 78
BODY_INDENT = 7
TP_INDENT = 7

ERRNO_NAMES = frozenset(errno.errorcode.values())


class HeaderError(Exception):
    """A problem of the header, reported as path:line: message (no line:
    the message names its file)."""

    def __init__(self, line, message):
        super().__init__(message)
        self.line = line


class HeaderErrors(Exception):
    """All the problems found, reported together."""

    def __init__(self, errors):
        super().__init__("%d error(s)" % len(errors))
        self.errors = errors


# --------------------------------------------------------------------------
# Reading the header
# --------------------------------------------------------------------------

TOKEN = re.compile(r"""
      (?P<comment> /\*.*?\*/ )
    | (?P<line_comment> //[^\n]* )
    | (?P<pp> ^[ \t]*\#(?:[^\n]*\\\n)*[^\n]* )
    | (?P<string> "(?:\\.|[^"\\\n])*" | '(?:\\.|[^'\\\n])*' )
    """, re.S | re.M | re.X)

BANNER = re.compile(r"/\*\s*-{2,}\s*(?P<title>.*?)\s*-*\s*\*/\Z", re.S)


class Comment:
    def __init__(self, text, start, end, line, own_line):
        self.text = text          # with /* and */
        self.start = start
        self.end = end
        self.line = line
        self.own_line = own_line  # nothing but blanks before it on its line
        banner = BANNER.match(text)
        self.banner = banner.group("title") if banner else None


class Item:
    """A declaration of the header: a statement ending in ';' at brace depth
    0, or a run of #define lines."""

    def __init__(self, kind, text, start, end, line, group):
        self.kind = kind      # 'decl' or 'defines'
        self.text = text      # the source text, comments included
        self.start = start
        self.end = end
        self.line = line
        self.group = group    # title of the banner above it, or None
        self.doc = None       # the Comment directly before it, if any
        self.trailing = None  # a comment after it on its last line
        self.defines = []     # for 'defines': (name, value, line)


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def parse_header(text):
    """Returns (top comment or None, list of Items, list of Comments)."""
    comments = []
    items = []
    group = None
    # One entry per open #if: whether its code is C++ only (extern "C"),
    # which is skipped. Everything else is read, whatever the condition.
    conditionals = []
    guard = None          # the include guard's macro
    stmt_start = None     # offset of the statement being read
    depth = 0             # brace depth inside it
    pos = 0
    first_token = True
    top = None

    def skipping():
        return any(conditionals)

    def read_code(segment, offset):
        nonlocal stmt_start, depth
        if skipping():
            return
        for i, ch in enumerate(segment):
            if stmt_start is None:
                if ch.isspace():
                    continue
                stmt_start = offset + i
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == ";" and depth == 0:
                end = offset + i + 1
                items.append(Item("decl", text[stmt_start:end], stmt_start,
                                  end, line_of(text, stmt_start), group))
                stmt_start = None

    for m in TOKEN.finditer(text):
        read_code(text[pos:m.start()], pos)
        pos = m.end()
        kind = m.lastgroup
        tok = m.group()
        if kind == "string":
            read_code(tok, m.start())
            first_token = False
            continue
        if kind == "line_comment":
            continue
        if kind == "comment":
            bol = text.rfind("\n", 0, m.start()) + 1
            own = text[bol:m.start()].strip() == ""
            c = Comment(tok, m.start(), m.end(), line_of(text, m.start()), own)
            if first_token:
                top = c
            elif stmt_start is None or skipping():
                comments.append(c)
                if c.banner is not None:
                    group = c.banner
            first_token = False
            continue
        # A preprocessor line.
        first_token = False
        directive = re.match(r"\s*#\s*(\w+)\s*(.*)", tok, re.S)
        name, rest = directive.group(1), directive.group(2).strip()
        if name in ("if", "ifdef", "ifndef"):
            if name == "ifndef" and guard is None and not items and not conditionals:
                guard = rest
            conditionals.append("__cplusplus" in rest)
        elif name == "endif" and conditionals:
            conditionals.pop()
        elif name == "define":
            d = re.match(r"(\w+)(\([^)]*\))?(?:\s+(.*))?\Z", rest, re.S)
            mname, value = d.group(1), (d.group(3) or "").strip()
            # Function-like macros are the header's plumbing (attributes),
            # not constants for the reader.
            if skipping() or mname in (guard, "LSVC_API") or d.group(2):
                continue
            line = line_of(text, m.start())
            prev = items[-1] if items else None
            if (prev is not None and prev.kind == "defines"
                    and line_of(text, prev.end) == line - 1):
                prev.text = text[prev.start:m.end()]
                prev.end = m.end()
                prev.defines.append((mname, value, line))
            else:
                it = Item("defines", tok.strip(), m.start(), m.end(), line, group)
                it.defines.append((mname, value, line))
                items.append(it)
    read_code(text[pos:], pos)

    # Doc comments: a comment on lines of its own that ends on the line
    # before the item (or on the item's first line), and is no banner.
    # Trailing comments: a comment that starts on the item's last line.
    by_end = sorted(comments, key=lambda c: c.end)
    for it in items:
        for c in by_end:
            if c.end <= it.start and c.own_line and c.banner is None:
                gap = text[c.end:it.start]
                if gap.strip() == "" and gap.count("\n") <= 1:
                    it.doc = c
            if c.start >= it.end and not c.own_line:
                between = text[it.end:c.start]
                if "\n" not in between:
                    it.trailing = c
    return top, items, comments


# --------------------------------------------------------------------------
# Comments as blocks of text
# --------------------------------------------------------------------------

def comment_lines(raw):
    """The lines of a /* */ comment without the comment marks and the
    leading ' * ', keeping any further indentation."""
    body = raw[2:-2]
    lines = body.split("\n")
    out = []
    for i, line in enumerate(lines):
        if i == 0:
            line = line[1:] if line.startswith(" ") else line
        else:
            m = re.match(r"\s*\*(?!/) ?", line)
            line = line[m.end():] if m else line.strip()
        out.append(line.rstrip())
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return out


BULLET = re.compile(r"( {0,3})- (.*)")


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def blocks_of(lines):
    """Splits comment lines into blocks: ('p', text) a paragraph to reflow,
    ('ul', [text, ...]) a list of '- ' items, ('pre', [line, ...]) lines
    indented by two or more spaces (tables, timelines, sample output),
    kept as they are."""
    blocks = []
    i, n = 0, len(lines)
    blank_before = True
    while i < n:
        line = lines[i]
        if not line.strip():
            blank_before = True
            i += 1
            continue
        bullet = BULLET.match(line)
        if bullet:
            item_indent = len(bullet.group(1)) + 2
            text = [bullet.group(2).strip()]
            i += 1
            while (i < n and lines[i].strip() and indent_of(lines[i]) >= item_indent
                   and not BULLET.match(lines[i])):
                text.append(lines[i].strip())
                i += 1
            if blocks and blocks[-1][0] == "ul" and not blank_before:
                blocks[-1][1].append(" ".join(text))
            else:
                blocks.append(("ul", [" ".join(text)]))
        elif indent_of(line) >= 2:
            pre = []
            while i < n and lines[i].strip() and indent_of(lines[i]) >= 2:
                pre.append(lines[i])
                i += 1
            cut = min(indent_of(l) for l in pre)
            blocks.append(("pre", [l[cut:] for l in pre]))
        else:
            text = []
            while (i < n and lines[i].strip() and indent_of(lines[i]) < 2
                   and not BULLET.match(lines[i])):
                text.append(lines[i].strip())
                i += 1
            blocks.append(("p", " ".join(text)))
        blank_before = False
    return blocks


def plain_text(blocks):
    """All the words of the blocks, for the checks."""
    parts = []
    for kind, content in blocks:
        parts.append(content if kind == "p" else " ".join(content))
    return " ".join(parts)


def sentences(paragraph):
    return [s for s in re.split(r"(?<=\.)\s+(?=[A-Za-z(\"])", paragraph) if s]


# --------------------------------------------------------------------------
# Declarations
# --------------------------------------------------------------------------

def strip_comments(text):
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def squash(text):
    """One line, single spaces, no space inside parentheses."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\(\s+", "(", text)
    return re.sub(r"\s+([),;])", r"\1", text)


def split_top(text, sep=","):
    """Splits at `sep` outside parentheses and braces."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def declared_name(decl):
    """The name a declaration declares: int (*f)(void) -> f, char *s -> s."""
    m = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl)
    if m:
        return m.group(1)
    m = re.search(r"(\w+)\s*(?:\[[^\]]*\]\s*)*\Z", decl)
    return m.group(1) if m else None


class Function:
    def __init__(self, item):
        self.item = item
        decl = squash(strip_comments(item.text))
        decl = re.sub(r"\s*\bLSVC_PRINTF\([^)]*\)\s*;\Z", ";", decl)
        m = re.match(r"LSVC_API\s+(?P<ret>.+?)\s*\b(?P<name>\w+)\s*"
                     r"\((?P<params>.*)\)\s*;\Z", decl, re.S)
        if m is None:
            raise HeaderError(item.line, "LSVC_API declaration is not a function "
                              "prototype: " + decl)
        self.name = m.group("name")
        self.ret = m.group("ret").strip()
        self.params = split_top(m.group("params"))
        self.doc = item.doc
        self.group = item.group

    @property
    def head(self):
        sep = "" if self.ret.endswith("*") else " "
        return self.ret + sep + self.name

    @property
    def returns_void(self):
        return self.ret == "void"


class Typedef:
    def __init__(self, item, kind, name, decl_lines, members):
        self.item = item
        self.kind = kind          # 'struct', 'enum', 'opaque', 'other'
        self.name = name
        self.decl_lines = decl_lines
        self.members = members    # see parse_members


def parse_members(body, separator):
    """The members of a struct (separator ';') or enum (','), as
    (name, declaration, comment lines, whether the comment trails it), each
    with the comment on the lines right before it or, failing that, the one
    after it on its line."""
    members = []
    pending = None   # an own-line comment waiting for its member
    carry = ""       # code of a member not yet complete

    def take(code, last):
        nonlocal pending, carry
        pieces = (carry + code).split(separator)
        carry = pieces.pop()
        if last and carry.strip():
            pieces.append(carry)   # an enum's last member, without a comma
            carry = ""
        for piece in pieces:
            decl = squash(piece)
            if not decl:
                continue
            if separator == ";":
                name = declared_name(decl)
            else:
                name = decl.split("=")[0].strip()
            members.append([name, decl, pending, False])
            pending = None

    pos = 0
    for m in re.finditer(r"/\*.*?\*/", body, re.S):
        take(body[pos:m.start()], False)
        pos = m.end()
        bol = body.rfind("\n", 0, m.start()) + 1
        lines = comment_lines(m.group())
        if body[bol:m.start()].strip() == "" and not carry.strip():
            pending = lines
        elif members and members[-1][2] is None and not carry.strip():
            members[-1][2] = lines
            members[-1][3] = True
    take(body[pos:], True)
    return [(n, d, c or [], trailing) for n, d, c, trailing in members]


def parse_typedef(item):
    code = squash(strip_comments(item.text))
    m = re.match(r"typedef (struct|enum|union) (\w+)? ?\{", code)
    if m:
        kind = m.group(1)
        body_start = item.text.index("{") + 1
        body_end = item.text.rindex("}")
        body = item.text[body_start:body_end]
        tail = squash(item.text[body_end + 1:])
        name = re.match(r"(\w+)", tail).group(1)
        sep = ";" if kind in ("struct", "union") else ","
        members = parse_members(body, sep)
        lines = ["typedef %s %s{" % (kind, m.group(2) + " " if m.group(2) else "")]
        for i, (_, decl, _, _) in enumerate(members):
            end = ";" if sep == ";" else ("," if i < len(members) - 1 else "")
            lines.append("    " + decl + end)
        lines.append("} %s;" % name)
        return Typedef(item, "struct" if sep == ";" else "enum", name, lines, members)
    m = re.match(r"typedef (struct|union|enum) (\w+) (\w+);\Z", code)
    if m:
        return Typedef(item, "opaque", m.group(3), [code], [])
    name = declared_name(code[:-1])
    return Typedef(item, "other", name, [code], [])


# --------------------------------------------------------------------------
# troff
# --------------------------------------------------------------------------

def esc_code(text):
    """Escapes text for no-fill code: backslashes, every hyphen a minus."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def esc_prose(text):
    """Escapes text for filled prose: a hyphen between two letters stays a
    hyphen (real-time), any other is a minus sign (-5, --static)."""
    text = text.replace("\\", "\\e")
    return re.sub(r"(?<![A-Za-z])-|-(?![A-Za-z])", r"\\-", text)


def safe_line(line):
    """A leading dot or apostrophe would make the line a request."""
    if line.startswith((".", "'")):
        return "\\&" + line
    return line


class Markup:
    """Fonts for names in prose: functions, constants and error numbers in
    bold."""

    def __init__(self, functions, constants):
        self.functions = set(functions)
        self.constants = set(constants)
        self.pattern = re.compile(r"\b([A-Za-z_][\w*]*)\(\)|\b(\w+)\b")

    def __call__(self, text):
        def sub(m):
            if m.group(1) is not None:
                return "\\fB" + m.group(1) + "\\fR()"
            word = m.group(2)
            if word in self.functions:
                return "\\fB" + word + "\\fR"
            if word in self.constants or word in ERRNO_NAMES:
                return "\\fB" + word + "\\fR"
            return word
        return self.pattern.sub(sub, text)


class Page:
    def __init__(self, markup):
        self.out = []
        self.markup = markup

    def req(self, *lines):
        self.out.extend(lines)

    def text(self, text):
        """A paragraph's text as one filled line; `quoted` words are code
        (parameters, commands) and set in italics."""
        parts = re.split(r"(`[^`\n]*`)", text.strip())
        out = []
        for part in parts:
            if part.startswith("`") and part.endswith("`") and len(part) > 1:
                out.append("\\fI" + esc_code(part[1:-1]) + "\\fR")
            else:
                out.append(self.markup(esc_prose(part)))
        self.out.append(safe_line("".join(out)))

    def pre(self, lines, indent):
        """Lines kept as they are, indented by up to 4 more columns when the
        page is wide enough for them."""
        width = max(len(l) for l in lines)
        extra = max(0, min(4, PAGE_WIDTH - indent - width))
        if extra:
            self.req(".RS %d" % extra)
        self.req(".nf")
        for line in lines:
            self.out.append(safe_line(esc_code(line)) if line else "")
        self.req(".fi")
        if extra:
            self.req(".RE")

    def blocks(self, blocks, indent=BODY_INDENT, first=".PP", para=".PP"):
        """Comment blocks as paragraphs: `first` before the first (None in
        a tagged paragraph, whose text follows the tag), `para` before the
        others (.PP in a section, .IP in a tagged paragraph's body)."""
        for i, (kind, content) in enumerate(blocks):
            sep = first if i == 0 else para
            if sep and kind != "ul":   # .IP starts each item's paragraph
                self.req(sep)
            if kind == "p":
                self.text(content)
            elif kind == "pre":
                self.pre(content, indent)
            else:
                for item in content:
                    self.req(".IP \\(bu 2")
                    self.text(item)


def wrap_decl(head, params, tail, width, indent=0):
    """Lays out head(params)tail over lines, breaking after commas and
    lining continuations up after the parenthesis. Returns the lines as
    lists of (kind, text) pieces, kind 'head', 'param' or 'punct'."""
    lines = [[("head", head), ("punct", "(")]]
    col = len(head) + 1
    cont = col
    for i, p in enumerate(params):
        sep = ", " if i < len(params) - 1 else ""
        piece_len = len(p) + len(sep.rstrip())
        if i > 0 and indent + col + piece_len > width:
            lines[-1][-1] = ("punct", ",")
            lines.append([("punct", " " * cont)])
            col = cont
        lines[-1].append(("param", p))
        col += len(p)
        if sep:
            lines[-1].append(("punct", sep))
            col += len(sep)
    lines[-1].append(("punct", ")" + tail))
    return lines


def render_decl(pieces, bold_name=None):
    out = []
    for kind, text in pieces:
        if kind == "head" and bold_name:
            prefix = text[:len(text) - len(bold_name)]
            out.append(esc_code(prefix) + "\\fB" + bold_name + "\\fR")
        elif kind == "param" and len(re.findall(r"\w+", text)) > 1:
            name = declared_name(text)   # not in "void", "...", "int"
            if name:
                i = text.rindex(name)
                out.append(esc_code(text[:i]) + "\\fI" + name + "\\fR"
                           + esc_code(text[i + len(name):]))
            else:
                out.append(esc_code(text))
        else:
            out.append(esc_code(text))
    return safe_line("".join(out))


def prototype_lines(fn, indent):
    lines = wrap_decl(fn.head, fn.params, ";", PAGE_WIDTH, indent)
    return [render_decl(l, fn.name) for l in lines]


def code_lines(decl, indent):
    """A one-line declaration, wrapped at the commas of its last
    parenthesised list when too wide."""
    if len(decl) + indent <= PAGE_WIDTH or not decl.endswith(");"):
        return [safe_line(esc_code(decl))]
    depth, open_at = 0, None
    for i in range(len(decl) - 3, -1, -1):
        if decl[i] == ")":
            depth += 1
        elif decl[i] == "(":
            if depth == 0:
                open_at = i
                break
            depth -= 1
    head = decl[:open_at]
    params = split_top(decl[open_at + 1:-2])
    pieces = wrap_decl(head, params, ";", PAGE_WIDTH, indent)
    return [safe_line("".join(esc_code(t) for _, t in l)) for l in pieces]


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

RETURN_WORDS = re.compile(r"\b(returns?|returned|gives)\b", re.I)
# An accessor's comment may instead open with the value it gives:
# "The service's name, or NULL ...", "Whether the thread is alive ...".
VALUE_OPENING = re.compile(r"(The|A|An|Whether)\b")


def check_returns(fn, blocks):
    """A function that returns something says what: its comment uses
    "return(s)", "returned" or "gives", or, for a function that returns no
    error number (not int), opens with the value it returns ("The
    service's name, ...", "Whether ..."). void functions are exempt."""
    if fn.returns_void:
        return None
    words = plain_text(blocks)
    if RETURN_WORDS.search(words):
        return None
    if fn.ret != "int" and VALUE_OPENING.match(words):
        return None
    if fn.ret == "int":
        return ("the doc comment of %s does not say what it returns: name the "
                "errors (\"Returns EINVAL or EBUSY.\")" % fn.name)
    return ("the doc comment of %s does not say what it returns: open with "
            "the value (\"The ...\", \"Whether ...\") or say \"Returns ...\""
            % fn.name)


# --------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------

def env_variables(blocks, defined):
    """Environment variables a doc comment names: upper-case words with an
    underscore (LOOPSVC_LOG_LEVEL, LOOPSVC_<NAME>_ENABLED) that the header
    does not define, in a comment that mentions the environment."""
    text = plain_text(blocks)
    if not re.search(r"\benvironment\b", text):
        return []
    found = []
    for m in re.finditer(r"(?<![\w<>])[A-Z][A-Z0-9]*(?:_(?:[A-Z0-9]+|<[A-Z]+>))+(?![\w<>])",
                         text):
        word = m.group()
        if word not in defined and word not in found:
            found.append(word)
    return found


def table_rows(lines):
    """The rows of an indented table: a row starts at the table's left
    edge, its continuation lines are indented further. Returns
    [(first word, rest of the row's text)]."""
    rows = []
    for line in lines:
        if indent_of(line) == 0:
            parts = line.split(None, 1)
            rows.append([parts[0], parts[1] if len(parts) > 1 else ""])
        elif rows:
            rows[-1][1] += " " + line.strip()
    return [(a, re.sub(r"\s+", " ", b).strip()) for a, b in rows]


def write_environment(page, entries):
    page.req(".SH ENVIRONMENT")
    for fn, variables, blocks in entries:
        page.req(".TP")
        for i, var in enumerate(variables):
            if i:
                page.req(".TQ")
            page.req("\\fB" + esc_code(var) + "\\fR")
        # The sentences that name a variable, the sentence that leads into
        # a table of them, and the table as a list.
        said = []
        for b, (kind, content) in enumerate(blocks):
            if kind == "p":
                sents = sentences(content)
                nxt = blocks[b + 1] if b + 1 < len(blocks) else None
                for s_i, s in enumerate(sents):
                    names_one = any(v in s for v in variables)
                    leads_table = (s_i == len(sents) - 1 and s.endswith(":") and nxt
                                   and nxt[0] == "pre"
                                   and any(v in " ".join(nxt[1]) for v in variables))
                    if names_one or leads_table:
                        said.append(("p", s))
            elif kind == "pre" and any(v in " ".join(content) for v in variables):
                said.append(("rows", table_rows(content)))
        lead = "From %s():" % fn.name
        if not said or said[0][0] != "p":
            page.text(lead)
        for i, (kind, content) in enumerate(said):
            if kind == "p":
                if i:
                    page.req(".IP")
                page.text(lead + " " + content if i == 0 else content)
            else:
                page.req(".RS")
                for var, text in content:
                    page.req(".TP")
                    page.req("\\fB" + esc_code(var) + "\\fR")
                    page.text(text)
                page.req(".RE")


def generate(header_path, header, version, readme_path, readme):
    top, items, _ = parse_header(header)
    if top is None:
        raise HeaderError(1, "no comment at the top of the header")
    top_blocks = blocks_of(comment_lines(top.text))
    first = top_blocks[0][1] if top_blocks and top_blocks[0][0] == "p" else ""
    m = re.match(r"(\w+): (.+?)\.?\Z", first)
    if m is None:
        raise HeaderError(top.line, "the top comment does not open with "
                          "\"<name>: <what it is>.\"")
    name, summary = m.group(1), m.group(2)

    functions, typedefs, constants, errors = [], [], [], []
    for it in items:
        code = strip_comments(it.text).strip()
        if it.kind == "defines":
            constants.append(it)
        elif re.match(r"LSVC_API\b", code):
            try:
                fn = Function(it)
            except HeaderError as e:
                errors.append(e)
                continue
            if fn.doc is None:
                errors.append(HeaderError(it.line, "%s has no doc comment directly "
                                          "before its LSVC_API declaration" % fn.name))
                continue
            fn.blocks = blocks_of(comment_lines(fn.doc.text))
            problem = check_returns(fn, fn.blocks)
            if problem:
                errors.append(HeaderError(fn.doc.line, problem))
            functions.append(fn)
        elif code.startswith("typedef"):
            typedefs.append(parse_typedef(it))
        elif re.match(r"enum\s*(\w+\s*)?\{", code):
            constants.append(it)
        elif not code.startswith("extern") and code:
            # Not part of the page: say so, but it is not an error.
            print("%s: %s:%d: warning: not documented in the page: %s"
                  % (PROG, header_path, it.line, squash(code)), file=sys.stderr)
    if not functions and not errors:
        errors.append(HeaderError(1, "no LSVC_API function"))
    if errors:
        raise HeaderErrors(errors)

    enumerators = []
    for t in typedefs:
        if t.kind == "enum":
            enumerators += [m[0] for m in t.members]
    for it in constants:
        if it.kind == "decl":
            body = strip_comments(it.text)
            body = body[body.index("{") + 1:body.rindex("}")]
            enumerators += [p.split("=")[0].strip() for p in split_top(body) if p.strip()]
    macros = [d[0] for it in constants if it.kind == "defines" for d in it.defines]
    defined = set(macros + enumerators + [t.name for t in typedefs]
                  + [f.name for f in functions])
    markup = Markup([f.name for f in functions], macros + enumerators)
    page = Page(markup)

    groups = []
    for fn in functions:
        if not groups or groups[-1][0] != fn.group:
            groups.append((fn.group, []))
        groups[-1][1].append(fn)

    date = ""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        date = time.strftime("%Y-%m-%d", time.gmtime(int(os.environ["SOURCE_DATE_EPOCH"])))
    page.req('.\\" Generated from %s by gen-man.py: edit the header, not this file.'
             % os.path.basename(header_path),
             '.TH %s 3 "%s" "%s%s" "Library Functions Manual"'
             % (name.upper(), date, name, " " + version if version else ""))
    # No hyphenation and a ragged right margin: identifiers stay whole,
    # without wide gaps between the words of a line.
    page.req(".nh", ".ad l")

    page.req(".SH NAME", "%s \\- %s" % (name, esc_prose(summary)))

    page.req(".SH LIBRARY")
    page.text("%s (lib%s, -l%s); `pkg-config --cflags --libs %s` gives the flags "
              "to compile and link with it (add --static for a static link)."
              % (name, name, name, name))

    page.req(".SH SYNOPSIS", ".nf", "\\fB#include <%s>\\fR" % os.path.basename(header_path), ".fi")
    for title, fns in groups:
        page.req(".SS " + esc_prose(title or "Functions"))
        page.req(".nf")
        for fn in fns:
            page.req(*prototype_lines(fn, BODY_INDENT))
        page.req(".fi")

    page.req(".SH DESCRIPTION")
    page.blocks(top_blocks[1:])
    titles = [(t or "Functions").upper() for t, _ in groups]
    listing = ", ".join(titles[:-1]) + " and " + titles[-1] if len(titles) > 1 else titles[0]
    page.req(".PP")
    page.text("The section%s %s below describe%s each function; TYPES describes "
              "the types and CONSTANTS the macros." % (
                  "s" if len(titles) > 1 else "", listing, "" if len(titles) > 1 else "s"))

    for title, fns in groups:
        page.req(".SH " + esc_prose((title or "Functions").upper()))
        for fn in fns:
            page.req(".SS " + fn.name + "()")
            page.req(".nf", *prototype_lines(fn, BODY_INDENT))
            page.req(".fi")
            page.blocks(fn.blocks)

    page.req(".SH TYPES")
    opaque = [t for t in typedefs if t.kind == "opaque"]
    if opaque:
        page.req(".SS Opaque types")
        page.req(".PP")
        page.text("Incomplete types, used only through pointers.")
        for t in opaque:
            page.req(".TP", "\\fB" + t.name + "\\fR")
            if t.item.doc:
                page.blocks(blocks_of(comment_lines(t.item.doc.text)),
                            BODY_INDENT + TP_INDENT, None, ".IP")
            if t.item.trailing:
                page.text(sentence_case(" ".join(comment_lines(t.item.trailing.text))))
    for t in typedefs:
        if t.kind == "opaque":
            continue
        page.req(".SS " + t.name)
        page.req(".nf")
        for line in t.decl_lines:
            page.req(*code_lines(line, BODY_INDENT))
        page.req(".fi")
        if t.item.doc:
            page.blocks(blocks_of(comment_lines(t.item.doc.text)))
        documented = [m for m in t.members if m[2]]
        for n, d, c, trailing in documented:
            page.req(".TP", "\\fI" + n + "\\fR")
            if trailing:
                c = [sentence_case(" ".join(l.strip() for l in c))]
            page.blocks(blocks_of(c), BODY_INDENT + TP_INDENT, None, ".IP")

    page.req(".SH CONSTANTS")
    for it in constants:
        page.req(".PP", ".nf")
        if it.kind == "defines":
            for mname, value, _ in it.defines:
                page.req(safe_line(esc_code(("#define %s %s" % (mname, value)).strip())))
        else:
            code = strip_comments(it.text)
            body = code[code.index("{") + 1:code.rindex("}")]
            parts = [squash(p) for p in split_top(body) if p.strip()]
            page.req("enum {")
            page.req(*["    " + esc_code(p) + "," for p in parts])
            page.req("};")
        page.req(".fi")
        if it.doc:
            page.blocks(blocks_of(comment_lines(it.doc.text)))

    page.req(".SH RETURN VALUE")
    convention = [c for k, content in top_blocks if k == "ul" for c in content
                  if RETURN_WORDS.search(c)]
    if not convention:
        raise HeaderError(top.line, "the top comment states no return convention "
                          "(a '- ' item that says what functions return)")
    for c in convention:
        page.req(".PP")
        page.text(re.sub(r"^It returns", "Each function returns", c))
    valued = [f for f in functions if f.ret not in ("int", "void")]
    void = [f for f in functions if f.returns_void]
    if valued or void:
        parts = []
        if valued:
            parts.append(join_names(["%s() (%s)" % (f.name, f.ret) for f in valued])
                         + " return the value their descriptions name")
        if void:
            parts.append(join_names([f.name + "()" for f in void]) + " return nothing")
        page.req(".PP")
        page.text("Exceptions: " + "; ".join(parts) + ".")
    page.req(".PP")
    page.text("The errors each function returns are listed in its description above.")

    entries = []
    for fn in functions:
        variables = env_variables(fn.blocks, defined)
        if variables:
            entries.append((fn, variables, fn.blocks))
    if entries:
        write_environment(page, entries)

    if readme is not None:
        m = re.search(r"<!-- example -->\s*```c\n(.*?)```", readme, re.S)
        if m is None:
            raise HeaderError(None, "%s: no ```c block after <!-- example -->"
                              % readme_path)
        page.req(".SH EXAMPLES")
        page.text("The example program of the README, which the test suite builds "
                  "and runs:")
        page.req(".PP")
        page.pre(m.group(1).rstrip("\n").split("\n"), BODY_INDENT)

    page.req(".SH SEE ALSO")
    see = [("clock_nanosleep", 2), ("pthread_create", 3), ("pthread_sigmask", 3),
           ("sd_notify", 3), ("sigwait", 3)]
    for i, (ref, sec) in enumerate(see):
        page.req(".BR %s (%d)%s" % (ref.replace("-", "\\-"), sec, "," if i < len(see) - 1 else ""))
    # groff reads its input as Latin-1 unless run through preconv: any
    # other character goes as an escape, \[u00B5] for a micro sign.
    text = "\n".join(page.out) + "\n"
    return "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in text)


def sentence_case(text):
    """A trailing comment ("one service") as a sentence ("One service.")."""
    text = text.strip()
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    if text and text[-1] not in ".:!?":
        text += "."
    return text


def join_names(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def main():
    ap = argparse.ArgumentParser(description="Writes loopsvc.3 from loopsvc.h.")
    ap.add_argument("--version", default="")
    ap.add_argument("--readme", help="README.md whose example goes to EXAMPLES")
    ap.add_argument("header")
    ap.add_argument("output")
    args = ap.parse_args()

    with open(args.header, encoding="utf-8") as f:
        header = f.read()
    readme = None
    if args.readme:
        with open(args.readme, encoding="utf-8") as f:
            readme = f.read()
    try:
        page = generate(args.header, header, args.version, args.readme, readme)
    except (HeaderError, HeaderErrors) as e:
        errors = e.errors if isinstance(e, HeaderErrors) else [e]
        for err in errors:
            where = "%s:%d: " % (args.header, err.line) if err.line else ""
            print("%s: %serror: %s" % (PROG, where, err), file=sys.stderr)
        print("%s: %s not written" % (PROG, args.output), file=sys.stderr)
        return 1
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
