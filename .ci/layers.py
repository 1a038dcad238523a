#!/usr/bin/env python3
"""Which source file uses which, and the cycles among them.

Each file under src/ is a module (`mod.rs` stands for its directory, `lib.rs` for the crate
root). A file uses another when its code (comments left out) names a path into it:
`crate::a::b`, `super::x`, `self::x`, or a child module it declares (`mod x;` then `x::...`);
a path is charged to the longest file module it starts with. `#[cfg(test)]` blocks count
too. Prints the edges with --edges, always the cycles (strongly connected groups of files);
exits 1 when there is one. tests/it/layers.rs checks the same in the suite.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"


def strip_comments(text):
    """The code without comments; string and char literals kept, so `"//"` is not a comment."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif m := re.compile(r'b?r(#*)"').match(text, i):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append('""')
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'" and (m := re.compile(r"'(\\.[^']*|[^\\'])'").match(text, i)):
            out.append("' '")
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts.pop()
    return tuple(parts)


def name(module):
    return "::".join(module) or "crate"


PATH = re.compile(r"(?<![\w:])(\$?crate|super|self|[a-z_][a-z0-9_]*)((?:::[A-Za-z_]\w*)*)(::\{)?")


def expand(prefix, text, start):
    """`prefix::{a, b::c}` starting at text[start] (just after the `{`): the full paths."""
    paths, depth, item, i = [], 1, "", start
    while i < len(text) and depth:
        c = text[i]
        if c == "{":
            inner, i = expand(prefix + item.strip().rstrip(":").split("::"), text, i + 1)
            paths += inner
            item = ""
            continue
        if c == "}":
            depth -= 1
        elif c == ",":
            if item.strip():
                paths.append(prefix + item.strip().split(" as ")[0].strip().split("::"))
            item = ""
        else:
            item += c
        i += 1
    if item.strip():
        paths.append(prefix + item.strip().split(" as ")[0].strip().split("::"))
    return paths, i


def uses(path, modules):
    """The file modules that the file at `path` names."""
    here = module_of(path)
    text = strip_comments(path.read_text())
    children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M))
    # Inline modules (`mod tests { ... }`): `super::` inside one is the file itself.
    inline = [(m.end(), m.end() + block_len(text, m.end())) for m in
              re.finditer(r"\bmod\s+\w+\s*\{", text)]
    found = set()
    for m in PATH.finditer(text):
        head, rest = m.group(1), [p for p in m.group(2).split("::") if p]
        if not rest and not m.group(3):
            continue
        if m.group(3):
            paths, _ = expand([head] + rest, text, m.end())
        else:
            paths = [[head] + rest]
        nested = sum(1 for a, b in inline if a <= m.start() < b)
        for p in paths:
            head, rest = p[0], p[1:]
            if head in ("crate", "$crate"):
                base = ()
            elif head == "self":
                base = here
            elif head == "super":
                base = here if nested else here[:-1]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            elif head in children and not nested:
                base, rest = here + (head,), rest
            else:
                continue
            target = base
            for part in rest:
                if target + (part,) in modules:
                    target += (part,)
                else:
                    break
            if target != here and target in modules and target != ():
                found.add(target)
    return found


def block_len(text, start):
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return i - start


def cycles(graph):
    """Tarjan: the strongly connected groups of more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    files = [p for p in sorted(ROOT.rglob("*.rs")) if p.name != "main.rs"]
    modules = {module_of(p) for p in files}
    graph = {module_of(p): uses(p, modules) for p in files}
    if "--edges" in sys.argv:
        for m in sorted(graph):
            print(f"{name(m)} -> {', '.join(name(t) for t in sorted(graph[m]))}")
    groups = cycles(graph)
    for group in groups:
        inner = {m: graph[m] & set(group) for m in group}
        print(f"cycle of {len(group)}:")
        for m in group:
            print(f"  {name(m)} -> {', '.join(name(t) for t in sorted(inner[m]))}")
    if not groups:
        print("no cycles")
    return 1 if groups else 0


if __name__ == "__main__":
    sys.exit(main())
