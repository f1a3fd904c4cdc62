"""A token trie over scoring requests, and the plan for walking it with a KV cache.

Requests are prompts made of pieces; equal leading pieces are a shared prefix. The trie
holds each shared prefix once. Walking it depth-first, a backend computes each edge's
tokens once on top of its parent's cache. Near the leaves, many tiny forward calls cost
more than re-reading a few tokens, so a node's whole subtree can instead be run as one
right-padded batch on top of the node's cache; `plan` picks whichever is cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    """One sequence to run: a prompt, optional tail tokens after it, and where to read.

    reads: (offset, continuation index, token id). Offset 0 is the last prompt token,
    whose next-token distribution scores a continuation's first token.
    """

    request: int
    pieces: tuple[tuple[int, ...], ...]
    tail: tuple[int, ...]
    reads: tuple[tuple[int, int, int], ...]

    def prompt_length(self) -> int:
        return sum(len(p) for p in self.pieces)

    def length(self) -> int:
        return self.prompt_length() + len(self.tail)


@dataclass
class Node:
    tokens: list[int] = field(default_factory=list)  # the edge into this node
    children: dict[tuple[int, ...], "Node"] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)  # rows whose prompt ends here
    batch: bool = False  # plan: run the whole subtree as padded batches from here
    row_count: int = 0
    cost: float = 0.0


def build_trie(rows: list[Row]) -> Node:
    root = Node()
    for row in rows:
        node = root
        for piece in row.pieces:
            if not piece:
                continue
            child = node.children.get(piece)
            if child is None:
                child = node.children[piece] = Node(tokens=list(piece))
            node = child
        node.rows.append(row)
    for child in root.children.values():
        _compress(child)
    return root


def trie_tokens(node: Node) -> int:
    """Tokens in the trie: what a walk computes with no padding and no re-read prefix."""
    return len(node.tokens) + sum(len(r.tail) for r in node.rows) + sum(trie_tokens(c) for c in node.children.values())


def _compress(node: Node) -> None:
    # A chain of single children is one forward call, not one per piece.
    while len(node.children) == 1 and not node.rows:
        (only,) = node.children.values()
        node.tokens.extend(only.tokens)
        node.children = only.children
        node.rows = only.rows
    for child in node.children.values():
        _compress(child)


def suffixes(node: Node, pending: list[int]) -> list[tuple[Row, list[int], int]]:
    """Every row under `node` as (row, tokens past the cache, index of its last prompt token)."""
    out: list[tuple[Row, list[int], int]] = []

    def walk(n: Node, prefix: list[int]) -> None:
        for row in n.rows:
            out.append((row, prefix + list(row.tail), len(prefix) - 1))
        for child in n.children.values():
            walk(child, prefix + child.tokens)

    walk(node, list(pending))
    return out


def plan(node: Node, pending_len: int, overhead: int, batch_rows: int) -> float:
    """Mark each node batch-or-expand by a token cost model; return the subtree's cost.

    `overhead` is what one forward call costs beyond its tokens, in token-equivalents.
    Costs are estimates only: either choice computes the same scores.
    """
    rows = suffix_lengths(node, pending_len)
    node.row_count = len(rows)
    batches = -(-len(rows) // batch_rows) if rows else 0
    batch_cost = sum(padded_chunks(sorted(rows), batch_rows)) + overhead * batches
    expand_cost = 0.0
    if node.rows:
        ending = [pending_len + len(r.tail) for r in node.rows]
        expand_cost += sum(padded_chunks(sorted(ending), batch_rows)) + overhead * -(-len(ending) // batch_rows)
    for child in node.children.values():
        expand_cost += overhead + pending_len + len(child.tokens) - 1
        expand_cost += plan(child, 1, overhead, batch_rows)
    node.batch = batch_cost <= expand_cost
    node.cost = min(batch_cost, expand_cost)
    return node.cost


def suffix_lengths(node: Node, pending_len: int) -> list[int]:
    out: list[int] = []

    def walk(n: Node, length: int) -> None:
        for row in n.rows:
            out.append(length + len(row.tail))
        for child in n.children.values():
            walk(child, length + len(child.tokens))

    walk(node, pending_len)
    return out


def padded_chunks(lengths: list[int], batch_rows: int) -> list[int]:
    """Padded token count of each chunk when sorted lengths are cut into batches."""
    return [max(lengths[i:i + batch_rows]) * len(lengths[i:i + batch_rows]) for i in range(0, len(lengths), batch_rows)]

