"""The demo task: recall the value stored under the queried key.

A prompt lists ``pairs`` stored pairs, one token each ("f=3" stores 3 under key f), then asks for
one key::

    f=3 b=7 k=3 a=1 ? b        → answer "7"

The model must find the pair whose key matches the query and output its value, so the true causal
position is known: the matching pair (``gold``). (One token per pair keeps the circuit learnable
in minutes on a CPU: a key-matching attention head and a value readout. With key and value as
separate tokens, 2-layer models sat on the "some value in the context" plateau for thousands of
steps.) Distractors make the
task discriminative: the answer value is also stored under 1–2 other keys (``distractors`` holds
those pairs), so a method that highlights "tokens equal to the answer" or "recent
tokens" rather than the pair the model actually read is caught. Every value occurs 2–3 times, so
counting values cannot solve the task; keys never repeat.

Only the pair region (positions 0 .. pairs−1) is ranked for hit@k and F1: the trailing "? key"
is the same scaffolding in every example (see docs/evaluation.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KEYS = [chr(c) for c in range(ord("a"), ord("a") + 16)]
VALUES = [str(v) for v in range(10)]
QUERY = "?"
SPECIAL = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
PAIRS = [f"{k}={v}" for k in KEYS for v in VALUES]
VOCAB = SPECIAL + KEYS + VALUES + PAIRS + [QUERY]
MIN_PAIRS, MAX_PAIRS = 4, 8


@dataclass(frozen=True)
class Example:
    """One prompt (words joined by spaces), its answer, and the positions that matter.

    Positions are word indices, which are token indices under the demo tokenizer.
    """

    words: list[str]
    answer: str
    gold: list[int]  # the pair holding the queried key
    distractors: list[int]  # other pairs storing the answer value
    candidates: int  # positions 0..candidates-1 are ranked (the pairs)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _group_sizes(rng: random.Random, pairs: int) -> list[int]:
    """Split ``pairs`` into groups of 2 or 3 (random order)."""
    sizes = []
    while pairs > 0:
        size = 2 if pairs in (2, 4) else 3 if pairs == 3 else rng.choice((2, 3))
        sizes.append(size)
        pairs -= size
    return sizes


def example(rng: random.Random, pairs: int | None = None) -> Example:
    """One random example with ``pairs`` pairs (default 4–8).

    Every stored value occurs 2 or 3 times, so value frequency says nothing about the answer: only
    the pair whose key matches the query does.
    """
    pairs = pairs if pairs is not None else rng.randint(MIN_PAIRS, MAX_PAIRS)
    if pairs < 2:
        raise ValueError("the task needs at least 2 pairs")
    keys = rng.sample(KEYS, pairs)
    sizes = _group_sizes(rng, pairs)
    values = [v for v, size in zip(rng.sample(VALUES, len(sizes)), sizes, strict=True) for _ in range(size)]
    rng.shuffle(values)
    queried = rng.randrange(pairs)
    answer = values[queried]
    words = [f"{k}={v}" for k, v in zip(keys, values, strict=True)] + [QUERY, keys[queried]]
    return Example(
        words=words,
        answer=answer,
        gold=[queried],
        distractors=[i for i, v in enumerate(values) if v == answer and i != queried],
        candidates=pairs,
    )


def training_sequence(rng: random.Random, queries: int) -> tuple[list[str], list[int], list[str]]:
    """(words, positions that predict an answer, the answers): one set of pairs, then ``queries``
    questions about it, each followed by its answer ("… ? b 7 ? k 3 ? f 3")."""
    e = example(rng)
    pairs = e.words[: e.candidates]
    keys, values = [p.split("=")[0] for p in pairs], [p.split("=")[1] for p in pairs]
    asked = [rng.randrange(len(keys)) for _ in range(queries)]
    words, positions = list(pairs), []
    for q in asked:
        words += [QUERY, keys[q], values[q]]
        positions.append(len(words) - 2)
    return words, positions, [values[q] for q in asked]


def examples(count: int, seed: int) -> list[Example]:
    """``count`` examples from one seeded stream (training uses seed ≥ 1000, evaluation 0..999)."""
    rng = random.Random(seed)
    return [example(rng) for _ in range(count)]
