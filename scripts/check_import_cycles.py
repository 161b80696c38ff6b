#!/usr/bin/env python3
"""Module-level import cycles of Rust crates (`make lint` runs it on raftstore, scheduler, snap).

usage: check_import_cycles.py CRATE/src [CRATE/src ...] [--edges] [--children]

Each directory is one crate's src/ (with lib.rs), checked on its own.
  An edge A -> B (A, B modules of this crate) is any path in A's non-test code that starts with
  `crate::`, `super::`, `self::`, a child-module name, or a name a `use` bound to a module, and
  resolves to B. `use` trees ({..}, self, as, *) are expanded; paths are followed through `use`
  bindings / re-exports (e.g. crate::Callback -> msg, crate::peer::PollContext -> peer::context).
  Comments, doc comments and string literals are ignored; every `#[cfg(test)]` item (mod tests
  {..}, test-only fns, `#[cfg(test)] mod x;` files) is dropped. Edges to or from the crate root
  (lib.rs) do not count.
  Nodes are top-level modules (peer = peer/mod.rs + peer/*.rs); --children uses
  peer::propose etc. instead and also shows edges inside one top module.
Prints "DIR: no cycles" for a crate without a cycle, or each cycle (strongly connected component
of more than one module) with the edges that make it. Exits 1 if any crate has a cycle, 2 on a
usage error, 0 otherwise. --edges also prints each crate's whole graph.
"""
import os, re, sys
from collections import defaultdict

def strip(src):
    """Blank comments, strings and char literals (keeping newlines and offsets)."""
    out, i, n = list(src), 0, len(src)
    def blank(a, b):
        for k in range(a, b):
            if out[k] != '\n':
                out[k] = ' '
    while i < n:
        c = src[i]
        if src.startswith('//', i):
            j = src.find('\n', i); j = n if j < 0 else j
            blank(i, j); i = j
        elif src.startswith('/*', i):
            d, j = 1, i + 2
            while j < n and d:
                if src.startswith('/*', j): d += 1; j += 2
                elif src.startswith('*/', j): d -= 1; j += 2
                else: j += 1
            blank(i, j); i = j
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (i == 0 or not (src[i-1].isalnum() or src[i-1] == '_')):
            end = '"' + m.group(1)
            j = src.find(end, m.end()); j = n if j < 0 else j + len(end)
            blank(i, j); i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == '\\' else 1
            blank(i, j + 1); i = j + 1
        elif c == "'":
            if i + 1 < n and src[i+1] == '\\':
                j = src.find("'", i + 2); blank(i, j + 1); i = j + 1
            elif i + 2 < n and src[i+2] == "'":
                blank(i, i + 3); i += 3
            else:
                i += 1  # lifetime
        else:
            i += 1
    return ''.join(out)

CFG_TEST = re.compile(r'#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]')

def drop_test_items(s):
    """Blank every #[cfg(test)] item; return (text, names of `#[cfg(test)] mod x;`)."""
    test_mods = set()
    while (m := CFG_TEST.search(s)):
        i, depth, j = m.end(), 0, m.end()
        while j < len(s):
            ch = s[j]
            if ch in '([': depth += 1
            elif ch in ')]': depth -= 1
            elif ch == ';' and depth == 0:
                mm = re.search(r'\bmod\s+(\w+)\s*$', s[i:j])
                if mm: test_mods.add(mm.group(1))
                j += 1; break
            elif ch == '{' and depth == 0:
                b = 0
                while j < len(s):
                    if s[j] == '{': b += 1
                    elif s[j] == '}':
                        b -= 1
                        if b == 0: break
                    j += 1
                j += 1; break
            j += 1
        s = s[:m.start()] + ''.join(ch if ch == '\n' else ' ' for ch in s[m.start():j]) + s[j:]
    return s, test_mods

class Crate:
    def __init__(self, src):
        self.src = src.rstrip('/')
        self.files = {}      # module path tuple -> file
        self.text = {}       # module path -> stripped text
        self.children = defaultdict(set)
        self.discover((), os.path.join(self.src, 'lib.rs'), self.src)
        self.bindings = defaultdict(dict)   # module -> name -> (abs path segments)
        self.uses = {}                      # module -> [(segments, bound name, offset)]
        for mod in self.files:
            self.uses[mod] = self.parse_uses(mod)

    def discover(self, mod, path, childdir):
        raw = open(path, encoding='utf-8').read()
        text, test_mods = drop_test_items(strip(raw))
        self.files[mod], self.text[mod] = path, text
        for m in re.finditer(r'^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;', text, re.M):
            name = m.group(1)
            if name in test_mods: continue
            for cand, sub in ((os.path.join(childdir, name + '.rs'), os.path.join(childdir, name)),
                              (os.path.join(childdir, name, 'mod.rs'), os.path.join(childdir, name))):
                if os.path.exists(cand):
                    self.children[mod].add(name)
                    self.discover(mod + (name,), cand, sub)
                    break

    # ---- use trees ----
    def parse_uses(self, mod):
        text, res = self.text[mod], []
        for m in re.finditer(r'(?<![\w:])use\s+([^;]*);', text):
            toks = [(t.group(), m.start(1) + t.start()) for t in
                    re.finditer(r'::|\w+|[{},*]', m.group(1))]
            self.expand(toks, 0, [], res)
        for segs, name, off in res:
            if name not in ('*', '_'):
                self.bindings[mod][name] = (segs, off)
        return res

    def expand(self, toks, i, prefix, res):
        """Parse one use tree at toks[i]; append (segments, bound name, offset). Return next i."""
        segs = list(prefix)
        while i < len(toks):
            t, off = toks[i]
            if t == '{':
                i += 1
                while toks[i][0] != '}':
                    i = self.expand(toks, i, segs, res)
                    if toks[i][0] == ',': i += 1
                return i + 1
            if t == '*':
                res.append((segs + ['*'], '*', off)); return i + 1
            if t == '::':
                i += 1; continue
            if t == 'self' and segs:   # `a::{self}`
                res.append((segs, segs[-1], off)); i += 1
                if i < len(toks) and toks[i][0] == 'as':
                    res[-1] = (segs, toks[i+1][0], off); i += 2
                return i
            segs.append(t); i += 1
            if i < len(toks) and toks[i][0] == 'as':
                res.append((segs, toks[i+1][0], off)); return i + 2
            if i >= len(toks) or toks[i][0] in (',', '}'):
                res.append((segs, segs[-1], off)); return i
        return i

    # ---- resolution ----
    def start(self, mod, segs):
        """Absolute module + remaining segments for a path written in `mod`, or None (external)."""
        first, rest = segs[0], list(segs[1:])
        if first == 'crate': cur = ()
        elif first == 'self': cur = mod
        elif first == 'super':
            cur = mod[:-1]
            while rest and rest[0] == 'super':
                cur, rest = cur[:-1], rest[1:]
        elif first in self.children[mod]: cur, rest = mod + (first,), rest
        elif first in self.bindings[mod]:
            r = self.resolve(mod, self.bindings[mod][first][0], 0)
            if r is None or r[1] is not None: return None
            cur = r[0]
        else: return None
        return cur, rest

    def resolve(self, mod, segs, depth=0):
        """-> (module where the item lives, item name or None) or None if not in this crate."""
        if depth > 20: return None
        st = self.start(mod, segs)
        if st is None: return None
        cur, rest = st
        while rest and rest[0] in self.children[cur]:
            cur, rest = cur + (rest[0],), rest[1:]
        if not rest or rest[0] == '*': return cur, None
        name = rest[0]
        if name in self.bindings[cur]:   # a `use` in `cur` (re-export, or a parent's import)
            r = self.resolve(cur, self.bindings[cur][name][0] + rest[1:], depth + 1)
            if r is not None: return r
        return cur, name

    def edges(self):
        """-> list of (src module, dst module, name as written, file, line)."""
        out = []
        for mod, text in self.text.items():
            spans = []
            def add(segs, off):
                r = self.resolve(mod, segs)
                if r is None: return
                dst = r[0]
                if dst == () and r[1] is None: return
                line = text.count('\n', 0, off) + 1
                out.append((mod, dst, '::'.join(segs), self.files[mod], line))
            for m in re.finditer(r'(?<![\w:])use\s+([^;]*);', text):
                spans.append((m.start(), m.end()))
            for segs, name, off in self.uses[mod]:
                add(segs, off)
            for m in re.finditer(r'(?<![\w:.])(\w+)((?:\s*::\s*\w+)+)', text):
                if any(a <= m.start() < b for a, b in spans): continue
                segs = [m.group(1)] + re.findall(r'\w+', m.group(2))
                if segs[0] in ('crate', 'super', 'self') or segs[0] in self.children[mod] \
                        or segs[0] in self.bindings[mod]:
                    add(segs, m.start())
        return out

def sccs(nodes, adj):
    index, low, stack, on, res, c = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in sorted(adj[v]):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            res.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index: visit(v)
    return res

def check(src, children, show_edges):
    """Prints the cycles of the crate in `src` (or "no cycles"); returns how many there are."""
    crate = Crate(src)
    name = (lambda m: '::'.join(m) or 'crate') if children else (lambda m: m[0] if m else 'crate')
    adj, why = defaultdict(set), defaultdict(list)
    for a_mod, b_mod, path, f, line in crate.edges():
        a, b = name(a_mod), name(b_mod)
        if a == b or a == 'crate' or b == 'crate': continue
        adj[a].add(b)
        why[a, b].append(f'{os.path.relpath(f, crate.src)}:{line} {path}')
    nodes = {name(m) for m in crate.files if m} | set(adj)
    if show_edges:
        for a in sorted(adj):
            for b in sorted(adj[a]):
                print(f'{src}: {a} -> {b}: ' + '; '.join(why[a, b]))
    cyc = [c for c in sccs(nodes, adj) if len(c) > 1]
    if not cyc:
        print(f'{src}: no cycles')
    for c in cyc:
        print(f'{src}: cycle: ' + ' <-> '.join(c))
        for a in c:
            for b in sorted(adj[a] & set(c)):
                print(f'  {a} -> {b}: ' + '; '.join(why[a, b]))
    return len(cyc)

def main():
    dirs = [a for a in sys.argv[1:] if not a.startswith('--')]
    unknown = [a for a in sys.argv[1:] if a.startswith('--') and a not in ('--edges', '--children')]
    if not dirs or unknown:
        print(__doc__, file=sys.stderr); return 2
    missing = [d for d in dirs if not os.path.isfile(os.path.join(d, 'lib.rs'))]
    if missing:
        print('no lib.rs in: ' + ', '.join(missing), file=sys.stderr); return 2
    found = sum(check(d.rstrip('/'), '--children' in sys.argv, '--edges' in sys.argv)
                for d in dirs)
    return 1 if found else 0

if __name__ == '__main__':
    sys.exit(main())
