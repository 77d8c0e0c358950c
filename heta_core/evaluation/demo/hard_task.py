"""The task of ``heta-demo-hard``: lookups whose causal path is more than one attention hop.

Tokens (one per definition, as in :mod:`.task`, so a small model learns the circuits in minutes):

    f=3     stores 3 under key f; a key stored again is **overridden: the later definition wins**
    F>c     alias F points to key c: asking for F answers c's value (two hops)
    f~3     a retracted definition: it names key f but must never be copied (a decoy)
    ? f     asks for f's value;   & f c   asks for both values joined into one token ("37")

    c=6 F>c b=3 c=7 c~2 ? F        → 7     (F → c; c=7 overrides c=6; c~2 is retracted)
    c=6 b=3 & b c                  → 36

Aliases are upper-case and defined only by pointers (8 of them, so each pointer token is seen
often enough to be learned in minutes). A joined answer depends on both values, and its logit is
linear in the two (one learned direction per digit and slot), which a small model learns quickly;
a sum mod 10 needs a memorised 100-entry table and stayed near 35% in the same training budget.

Training mixes all of it (mostly short contexts, some up to 18 keys; overrides, copies, pointers,
retractions; joins and alias questions make up half of the questions; several questions per
sequence, so later ones have earlier question/answer turns in their context), with label smoothing
so that the trained model's answer probabilities stay below 1 and its gradients and curvature are
not ~0. Every word's embedding starts as the sum of its parts' (:func:`parts`): without that, the
704-word vocabulary kept a 4-layer model on the "say some value" plateau (held-out accuracy 0.25
after 1,000 steps); with it, 0.98 after 750.

Evaluation prompts, one condition at a time with known causal tokens: :mod:`.conditions`.
"""

from __future__ import annotations

import random

from .task import QUERY, SPECIAL, VALUES

KEYS = [chr(c) for c in range(ord("a"), ord("a") + 20)]
ALIASES = [chr(c) for c in range(ord("A"), ord("A") + 8)]
JOIN = "&"
JOINED = [a + b for a in VALUES for b in VALUES]  # answers of "& f c"
PAIRS = [f"{k}={v}" for k in KEYS for v in VALUES]
POINTERS = [f"{a}>{k}" for a in ALIASES for k in KEYS]
DECOYS = [f"{k}~{v}" for k in KEYS for v in VALUES]
VOCAB = SPECIAL + KEYS + ALIASES + VALUES + JOINED + PAIRS + POINTERS + DECOYS + [QUERY, JOIN]
MAX_PROMPT_TOKENS = 40  # the longest suite prompt has 19 words; training sequences stay below 64


def resolve(words: list[str], key: str) -> str:
    """The value the task's rules give ``key`` in ``words`` (later pair wins; a pointer is followed)."""
    value = None
    for word in words:
        if word.startswith(key + "="):
            value = word[len(key) + 1 :]
        elif word.startswith(key + ">"):
            return resolve(words, word[len(key) + 1 :])
    if value is None:
        raise KeyError(key)
    return value


def answer_of(words: list[str], question: list[str]) -> str:
    """The answer to ``? k`` or ``& k j`` asked after ``words``."""
    if question[0] == QUERY:
        return resolve(words, question[1])
    return resolve(words, question[1]) + resolve(words, question[2])


def parts(word: str) -> list[str]:
    """The parts of a vocabulary word, which its embedding starts as the sum of (:func:`.train.factored_embeddings`):
    ``f=3`` → key f, value 3, "="; ``F>c`` → alias F, key c, ">"; ``37`` → value 3, second value 7."""
    for mark in ("=", ">", "~"):
        if mark in word and len(word) > 1:
            head, tail = word.split(mark)
            return [
                ("alias:" if head in ALIASES else "key:") + head,
                ("key:" if mark == ">" else "value:") + tail,
                mark,
            ]
    if word in JOINED:
        return ["value:" + word[0], "second:" + word[1]]
    if word in KEYS or word in ALIASES or word in VALUES:
        return [("key:" if word in KEYS else "alias:" if word in ALIASES else "value:") + word]
    return []


# ---- training sequences -------------------------------------------------------------------------

MAX_CONTEXT = 32  # words before the first question; with 6 questions a sequence fits n_positions = 64


def training_sequence(rng: random.Random, queries: int) -> tuple[list[str], list[int], list[str]]:
    """(words, positions that predict an answer, the answers): a random context, then ``queries``
    questions each followed by its answer (so later questions have earlier turns in their context)."""
    # mostly short contexts: the lookup circuits form there first; long ones teach length
    stored = rng.sample(KEYS, rng.randint(3, 8) if rng.random() < 0.6 else rng.randint(9, 18))
    words = [f"{k}={rng.choice(VALUES)}" for k in stored]
    for k in stored:
        if len(words) > MAX_CONTEXT - 8:  # room for two copies, 3 pointers and 3 retractions
            break
        extra = rng.random()
        if extra < 0.1:  # redundant copies (same value)
            words += [next(w for w in words if w.startswith(k + "="))] * rng.choice((1, 2))
        elif extra < 0.3:  # another definition: wherever it lands, the later one wins
            words.append(f"{k}={rng.choice(VALUES)}")
    aliases = rng.sample(ALIASES, rng.randint(1, 3))
    words += [f"{a}>{rng.choice(stored)}" for a in aliases]
    words += [f"{rng.choice(KEYS)}~{rng.choice(VALUES)}" for _ in range(rng.choice((0, 1, 2, 3)))]
    rng.shuffle(words)
    context = list(words)
    positions, answers = [], []
    for _ in range(queries):
        kind = rng.random()
        if kind < 0.25:
            question = [JOIN, *rng.sample(stored, 2)]
        elif kind < 0.5:
            question = [QUERY, rng.choice(aliases)]
        else:
            question = [QUERY, rng.choice(stored)]
        answer = answer_of(context, question)
        words += question
        positions.append(len(words) - 1)
        words.append(answer)
        answers.append(answer)
    return words, positions, answers
