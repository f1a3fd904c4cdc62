"""A trie over scoring requests: each shared prompt prefix once, each piece named by its prefix.

Requests are prompts made of pieces; equal leading pieces are a shared prefix. A node is one
piece, named by a digest of every token from the start of the prompt through it, so attention
state kept from earlier calls can be found again (see kv_store).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .kv_store import ROOT_KEY, chain_key


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
    piece: tuple[int, ...] = ()  # the piece this node adds to its parent's prefix
    key: bytes = ROOT_KEY  # digest of the prefix through this piece
    children: dict[tuple[int, ...], "Node"] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)  # rows whose prompt ends with this piece


def build_trie(rows: list[Row]) -> Node:
    root = Node()
    for row in rows:
        node = root
        for piece in row.pieces:
            if not piece:
                continue
            child = node.children.get(piece)
            if child is None:
                child = node.children[piece] = Node(piece, chain_key(node.key, piece))
            node = child
        node.rows.append(row)
    return root


def trie_tokens(node: Node) -> int:
    """Tokens in the trie: what computing each shared prefix once costs, with no other reuse."""
    return len(node.piece) + sum(len(r.tail) for r in node.rows) + sum(trie_tokens(c) for c in node.children.values())
