"""The conditions of ``heta eval --suite``: prompts whose causal tokens are known by construction.

Each condition draws prompts in the demo tasks' notation (:mod:`.task`, :mod:`.hard_task`); the
rules that define the answer are :func:`.hard_task.answer_of`'s (a later definition overrides an
earlier one, ``F>c`` is followed, ``f~v`` never counts, ``& f c`` joins two values). ``gold`` lists
the causal tokens, ``distractors`` the look-alikes: pairs that store the answer value under another
key (every condition stores it, or for ``&`` each of the two values, under 1–2 other keys, so
"highlight the answer value" is always wrong), overridden and retracted definitions of the queried
key, earlier answers equal to this one. Candidates for hit@k are the positions before the final
question.

=========  =================================================================  ======================
condition  prompt                                                             gold
=========  =================================================================  ======================
base       4–8 pairs, ``? f``                                                 f's pair
long       13–16 pairs                                                        f's pair
early      12 pairs, the queried pair first                                   f's pair
late       12 pairs, the queried pair last                                    f's pair
redundant  the queried pair stored 2–3 times (each copy suffices)             every copy
conflict   f stored twice with different values; the later wins               the later definition
decoy      1–2 retracted ``f~v`` (v ≠ answer), at least one after f's pair    f's pair
two_hop    ``F>c`` and ``? F``                                                the pointer and c's pair
compose    ``& f c``: both values joined ("37")                               both pairs
turns      2–3 earlier ``? k v`` turns, one with the same answer; ``? f``     f's pair
=========  =================================================================  ======================

``heta-demo`` knows only pairs and ``?`` (:data:`MODEL_CONDITIONS`): its suite leaves out decoy,
two_hop and compose, and its conflict and redundant prompts hold repeated keys it never saw in
training (its accuracy there is part of the result).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from . import DEMO_NAME, HARD_NAME, hard_task, task
from .hard_task import ALIASES, JOIN, answer_of
from .task import QUERY, VALUES, Example


class _Builder:
    """A context of distinct-key pairs; the answer value is then repeated under other keys."""

    def __init__(self, rng: random.Random, keys: list[str], pairs: int):
        self.rng, self.alphabet = rng, keys
        self.keys = rng.sample(keys, pairs)
        self.values = [rng.choice(VALUES) for _ in self.keys]
        self.words = [f"{k}={v}" for k, v in zip(self.keys, self.values, strict=True)]

    def repeat_value(self, value: str, avoid: set[int]) -> None:
        """Store ``value`` under 1–2 other keys, so that copying the answer value is never the answer."""
        others = [i for i in range(len(self.words)) if i not in avoid]
        for i in self.rng.sample(others, min(len(others), self.rng.choice((1, 2)))):
            self.values[i] = value
            self.words[i] = f"{self.keys[i]}={value}"

    def queried(self, at: int | None = None) -> int:
        """Pick the queried pair (random, or ``at``) and hide its value among look-alikes."""
        q = self.rng.randrange(len(self.keys)) if at is None else at
        self.repeat_value(self.values[q], {q})
        return q

    def insert(self, word: str, lo: int = 0, hi: int | None = None) -> int:
        """Insert ``word`` at a random position in [lo, hi]; returns where it went (later words shift)."""
        at = self.rng.randint(lo, len(self.words) if hi is None else hi)
        self.words.insert(at, word)
        return at


def _finish(
    words: list[str], question: list[str], gold: list[int], decoys: list[int] = (), shown: Sequence[str] = ()
) -> Example:
    """The example; distractors: ``decoys`` and every other word that shows the answer (or the ``shown`` values)."""
    answer = answer_of(words, question)
    looks = set(shown or [answer])
    shows_answer = {i for i, w in enumerate(words) if w.split("=")[-1] in looks}
    return Example(
        words=words + question,
        answer=answer,
        gold=sorted(gold),
        distractors=sorted((shows_answer | set(decoys)) - set(gold)),
        candidates=len(words),
    )


def _lookup(pairs: Callable[[random.Random], int], at: Callable[[int], int | None] = lambda n: None):
    def make(rng: random.Random, keys: list[str]) -> Example:
        b = _Builder(rng, keys, pairs(rng))
        q = b.queried(at(len(b.keys)))
        return _finish(b.words, [QUERY, b.keys[q]], [q])

    return make


def redundant(rng: random.Random, keys: list[str]) -> Example:
    b = _Builder(rng, keys, rng.randint(4, 8))
    pair = b.words[b.queried()]
    for _ in range(rng.choice((1, 2))):
        b.insert(pair)
    return _finish(b.words, [QUERY, pair.split("=")[0]], [i for i, w in enumerate(b.words) if w == pair])


def conflict(rng: random.Random, keys: list[str]) -> Example:
    b = _Builder(rng, keys, rng.randint(4, 8))
    q = b.queried()
    old = b.insert(f"{b.keys[q]}={rng.choice([v for v in VALUES if v != b.values[q]])}", 0, q)
    return _finish(b.words, [QUERY, b.keys[q]], [q + 1], [old])


def decoy(rng: random.Random, keys: list[str]) -> Example:
    b = _Builder(rng, keys, rng.randint(4, 8))
    q = b.queried()
    key, pair = b.keys[q], b.words[q]
    wrong = [v for v in VALUES if v != b.values[q]]
    b.insert(f"{key}~{rng.choice(wrong)}", q + 1)
    if rng.random() < 0.5:
        b.insert(f"{key}~{rng.choice(wrong)}")
    decoys = [i for i, w in enumerate(b.words) if w.startswith(key + "~")]
    return _finish(b.words, [QUERY, key], [b.words.index(pair)], decoys)


def two_hop(rng: random.Random, keys: list[str]) -> Example:
    b = _Builder(rng, keys, rng.randint(4, 8))
    target = b.queried()
    pair = b.words[target]
    source = rng.choice(ALIASES)
    pointer = f"{source}>{b.keys[target]}"
    b.insert(pointer)
    return _finish(b.words, [QUERY, source], [b.words.index(pointer), b.words.index(pair)])


def compose(rng: random.Random, keys: list[str]) -> Example:
    b = _Builder(rng, keys, rng.randint(4, 8))
    first, second, *others = rng.sample(range(len(b.keys)), len(b.keys))
    values = b.values[first], b.values[second]
    # two of the others (strict=False: there are more) store either value: they look like a cause, never are one
    for i, value in zip(others, values, strict=False):
        b.values[i], b.words[i] = value, f"{b.keys[i]}={value}"
    return _finish(b.words, [JOIN, b.keys[first], b.keys[second]], [first, second], shown=values)


def turns(rng: random.Random, keys: list[str]) -> Example:
    b = _Builder(rng, keys, rng.randint(5, 8))
    q = b.queried()
    same = [i for i in range(len(b.keys)) if i != q and b.values[i] == b.values[q]]
    others = [i for i in range(len(b.keys)) if i != q and i not in same]
    asked = same[:1] + rng.sample(others, min(len(others), rng.choice((1, 2))))
    rng.shuffle(asked)
    words = list(b.words)
    for i in asked:
        words += [QUERY, b.keys[i], b.values[i]]
    return _finish(words, [QUERY, b.keys[q]], [q])


CONDITIONS: dict[str, Callable[[random.Random, list[str]], Example]] = {
    "base": _lookup(lambda rng: rng.randint(4, 8)),
    "long": _lookup(lambda rng: rng.randint(13, 16)),
    "early": _lookup(lambda rng: 12, at=lambda n: 0),
    "late": _lookup(lambda rng: 12, at=lambda n: n - 1),
    "redundant": redundant,
    "conflict": conflict,
    "decoy": decoy,
    "two_hop": two_hop,
    "compose": compose,
    "turns": turns,
}
# the key alphabet each builtin model was trained on, and the conditions its vocabulary can express
MODEL_CONDITIONS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    DEMO_NAME: (task.KEYS, ("base", "long", "early", "late", "redundant", "conflict", "turns")),
    HARD_NAME: (hard_task.KEYS, tuple(CONDITIONS)),
}


def examples(count: int, seed: int, condition: str, model: str = HARD_NAME) -> list[Example]:
    """``count`` prompts of one condition for one builtin model, from one seeded stream."""
    keys, allowed = MODEL_CONDITIONS[model]
    if condition not in allowed:
        raise ValueError(f"condition must be one of {', '.join(allowed)} for {model}; got {condition!r}")
    rng = random.Random(f"{condition}:{seed}")  # a stream per condition: adding one never shifts another
    return [CONDITIONS[condition](rng, keys) for _ in range(count)]


def mixed(count: int, seed: int, model: str = HARD_NAME) -> list[Example]:
    """``count`` prompts cycling through the model's conditions (training's held-out accuracy)."""
    names = MODEL_CONDITIONS[model][1]
    pools = [examples(-(-count // len(names)), seed, name, model) for name in names]
    return [pools[i % len(pools)][i // len(pools)] for i in range(count)]
