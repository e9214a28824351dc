"""The comparison kube-proxy's own tests make, applied to the lab's rendering and to
kube-proxy's expected text alike; and the one place that lists what may still differ.

nftables (pkg/proxy/nftables/helpers_test.go ``sortNFTablesTransaction``): the dump is split
into lines, blank and ``#`` lines dropped, lines stable-sorted by object type (table, chain,
rule, set, map, element) then object name; rules of one chain keep their order. The lab's
renderer writes a transaction (``flush``, element lists), so it is first applied to a small
model of the table and printed one object per line, as knftables' fake ``Dump()`` does.

iptables (pkg/proxy/iptables/proxier_test.go ``sortIPTablesRules``): tables filter then nat;
chains KUBE-NODEPORTS, KUBE-SERVICES, then the other KUBE-* by name, then the rest; rules
grouped per chain in that order, stable-sorted only in KUBE-NODEPORTS and KUBE-SERVICES by
their comment's first word (the "must be the last rule" jump stays last); ``-X`` lines last.
"""

from __future__ import annotations

import re

# Every allowed difference between the lab's rules and kube-proxy's expected text: (what, why).
# Not differences: what depends on the machine kube-proxy runs on (nfacct counters in iptables
# rules, MASQUERADE --random-fully, the node's addresses) is an input of the lab's renderers
# (NodeContext), set from each fixture's `proxier:` block as kube-proxy's fake proxier sets it;
# on a lab node the renderer uses what the node has (no nfacct, --random-fully).
DIFFERENCES = (
    ("nftables: chains of a deleted Service port or endpoint that kube-proxy keeps, flushed, "
     "until they age out (sync-proxy-rules-repeated-3, -7, -9)",
     "history, not state: kube-proxy deletes a stale chain on a later sync, once no map element "
     "can still refer to it; the lab deletes it in the transaction that stops referring to it. "
     "Compared without those empty chains (the next state of each test shows them gone)."),
)


def _split_elements(body: str) -> list[str]:
    """``a , b`` / ``a, b`` inside an element list, not inside quotes or braces."""
    out, depth, quoted, cur = [], 0, False, ""
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "{":
            depth += 1
        elif not quoted and ch == "}":
            depth -= 1
        if not quoted and depth == 0 and ch == ",":
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    if cur.strip():
        out.append(cur.strip())
    return out


def nft_dump(transaction: str) -> str:
    """Apply an ``nft -f`` transaction to an empty table and print it one object per line."""
    decl: dict[tuple[str, str], str] = {}  # (type, name) -> declaration line
    rules: dict[str, list[str]] = {}
    elements: dict[str, dict[str, str]] = {}  # set/map -> key -> element text
    for line in transaction.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split(" ")
        verb, kind = words[0], words[1]
        if kind == "table":
            decl[("table", "")] = line
            continue
        name = words[4]
        if verb == "add" and kind in ("chain", "set", "map"):
            if (kind, name) not in decl or "{" in line:
                decl[(kind, name)] = line
            if kind == "chain":
                rules.setdefault(name, [])
        elif verb == "flush" and kind == "chain":
            rules[name] = []
        elif verb == "flush" and kind in ("set", "map"):
            elements[name] = {}
        elif verb == "add" and kind == "rule":
            rules.setdefault(name, []).append(line)
        elif verb == "add" and kind == "element":
            body = line[line.index("{") + 1: line.rindex("}")]
            for e in _split_elements(body):
                elements.setdefault(name, {})[e.split(" : ")[0].split(" comment ")[0]] = e
        elif verb == "delete" and kind == "element":
            body = line[line.index("{") + 1: line.rindex("}")]
            for e in _split_elements(body):
                elements.get(name, {}).pop(e.split(" : ")[0], None)
        elif verb == "delete" and kind in ("chain", "set", "map"):
            decl.pop((kind, name), None)
            rules.pop(name, None) if kind == "chain" else elements.pop(name, None)
        else:
            raise ValueError(f"unexpected line: {line}")
    out = [decl[k] for k in decl]
    for chain, rs in rules.items():
        out.extend(rs)
    table = decl[("table", "")].split(" ")[2:4]
    for m, es in elements.items():
        out.extend(f"add element {' '.join(table)} {m} {{ {e} }}" for e in es.values())
    return "\n".join(out)


_ORDER = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}


def nft_sorted(dump: str, drop_empty_chains: bool = False) -> list[str]:
    """upstream's sortNFTablesTransaction, as a list of lines (``drop_empty_chains``: the
    DIFFERENCES' stale chains: regular chains with no rule that nothing refers to)."""
    lines = [ln for ln in dump.split("\n") if ln and not ln.startswith("#")]
    if drop_empty_chains:
        with_rules = {ln.split(" ")[4] for ln in lines if ln.split(" ")[1:2] == ["rule"]}
        text = "\n".join(ln for ln in lines if ln.split(" ")[1:2] != ["chain"])
        lines = [ln for ln in lines
                 if not (ln.split(" ")[1:2] == ["chain"] and "{" not in ln and ln.split(" ")[4] not in with_rules
                         and not re.search(rf"(goto|jump) {re.escape(ln.split(' ')[4])}( |$)", text))]

    def key(ln: str) -> tuple[int, str, str]:
        w = ln.split(" ")
        if len(w) < 5:
            return (0, "", "")
        order = _ORDER.get(w[1], 0)
        return (-order, w[4], "" if w[1] == "rule" else ln)
    return sorted(lines, key=key)


def ipt_sorted(text: str) -> list[str]:
    """upstream's sortIPTablesRules over an iptables-restore input."""
    tables: dict[str, tuple[list[str], dict[str, list[str]], list[str]]] = {}
    current = ""
    for raw in text.splitlines():
        ln = raw.strip()
        if not ln or ln.startswith("#") or ln == "COMMIT":
            continue
        if ln.startswith("*"):
            current = ln[1:]
            tables.setdefault(current, ([], {}, []))
            continue
        chains, rules, deletes = tables[current]
        if ln.startswith(":"):
            name = ln[1:].split(" ")[0]
            if name not in chains:
                chains.append(name)
            rules.setdefault(name, [])
        elif ln.startswith("-A "):
            rules.setdefault(ln.split(" ")[1], []).append(ln)
        elif ln.startswith("-X "):
            deletes.append(ln)
        else:
            raise ValueError(f"unexpected line: {ln}")

    def chain_key(c: str) -> tuple[int, str]:
        if c == "KUBE-NODEPORTS":
            return (0, "")
        if c == "KUBE-SERVICES":
            return (1, "")
        return (2, c) if c.startswith("KUBE-") else (3, c)

    def comment_key(rule: str) -> str:
        if "must be the last rule" in rule:
            return "\uffff"
        m = re.search(r'--comment "?([^" :]*)', rule)
        return m.group(1) if m else ""

    out: list[str] = []
    for table in ("filter", "nat"):
        if table not in tables:
            continue
        chains, rules, deletes = tables[table]
        order = sorted(chains, key=chain_key)
        out.append(f"*{table}")
        out.extend(f":{c} - [0:0]" for c in order)
        for c in order:
            rs = rules.get(c, [])
            out.extend(sorted(rs, key=comment_key) if c in ("KUBE-NODEPORTS", "KUBE-SERVICES") else rs)
        out.extend(deletes)
        out.append("COMMIT")
    return out
