"""The BYU PCC Chit-Chat corpus (real human-human chats) as input/response pairs, split by conversation.

A conversation is a list of turns (consecutive messages of one sender, joined with a space); each turn and the
turn after it make one (input, response) pair, as Talk to Books' encoder was trained on conversation-like input
and response. Whole conversations go to one split, chosen from a hash of the conversation's id, so no chat is seen
both in training and in tuning or test, and the split does not depend on the order of the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from deepflows.errors import UserError

# Fractions of conversations per split, in hash order: train, tune, test.
SPLITS = (("train", 0.8), ("tune", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[str, ...]


def split_of(conversation_id: str) -> str:
    """The split of a conversation: a uniform value from the sha256 of its id, cut at the SPLITS fractions."""
    u = int.from_bytes(hashlib.sha256(conversation_id.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in SPLITS:
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1][0]


def read_conversations(path: str | Path) -> list[Conversation]:
    """Every conversation of the corpus file (dataset.json, gzip-compressed or not) with at least two turns."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: not a chit-chat corpus (JSON, optionally gzip-compressed): {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a chit-chat corpus (expected an object of conversations by id)")
    out = []
    for cid, conversation in data.items():
        try:
            turns = tuple(" ".join(m["text"].strip() for m in turn).strip() for turn in conversation["messages"])
        except (KeyError, TypeError, AttributeError):
            raise UserError(f"{path}: conversation {cid} is not a list of turns of messages with text") from None
        turns = tuple(t for t in turns if t)
        if len(turns) >= 2:
            out.append(Conversation(cid, turns))
    if not out:
        raise UserError(f"{path}: no conversation with two turns or more")
    return out


def split(conversations: list[Conversation], name: str) -> list[Conversation]:
    return [c for c in conversations if split_of(c.id) == name]


def pairs(conversations: list[Conversation]) -> list[tuple[str, str]]:
    """(turn, next turn) of every conversation, in order."""
    return [(c.turns[i], c.turns[i + 1]) for c in conversations for i in range(len(c.turns) - 1)]
