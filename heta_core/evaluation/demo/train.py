"""Train the builtin demo models from a seed: ``heta train-demo [--model heta-demo-hard] --out DIR [--seed S]``.

``heta-demo``: a 2-layer GPT-2 (d=64, 4 heads) on the one-hop retrieval task of :mod:`.task`.
``heta-demo-hard``: a 4-layer GPT-2 (d=128, 4 heads) on :mod:`.hard_task` (two hops, overrides,
decoys, joined answers), with label smoothing so its outputs stay unsaturated, embeddings that
start as sums of their words' parts, and one thread. The loss is on the answer tokens only. A run
is seeded (weights and data: same seed and thread count, same weights); docs/evaluation.md lists
the measured time and accuracy of the shipped runs (``training.json``).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from . import DEMO_NAME, HARD_NAME, conditions, hard_task, task

HELD_OUT_SEED = 0  # evaluation examples; training draws from seeds >= 1000


@dataclass(frozen=True)
class Recipe:
    """What differs between the builtin models: task, architecture and the shipped run's settings."""

    vocab: list[str]
    sequence: Callable[[random.Random, int], tuple[list[str], list[int], list[str]]]  # task.training_sequence
    held_out: Callable[[int], list[task.Example]]  # count -> held-out examples (seed HELD_OUT_SEED)
    architecture: dict = field(default_factory=dict)  # GPT2Config fields
    steps: int = 1500
    batch_size: int = 64
    queries: int = 4
    lr: float = 3e-3
    label_smoothing: float = 0.0
    conditions: tuple[str, ...] = ()  # suite conditions whose held-out accuracy the report records
    # word -> the parts its embedding starts as the sum of (hard_task.parts); None: GPT-2's init
    parts: Callable[[str], list[str]] | None = None
    # intra-op threads for the run (None: torch's default, what heta-demo's shipped run used). One
    # thread makes the weights the same on any machine, and on a shared 2-core machine it is also
    # faster: two threads spin-wait on each other whenever another process takes a core.
    threads: int | None = None


RECIPES = {
    DEMO_NAME: Recipe(
        vocab=task.VOCAB,
        sequence=task.training_sequence,
        held_out=lambda count: task.examples(count, HELD_OUT_SEED),
        architecture=dict(
            n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=256, max_prompt_tokens=2 * task.MAX_PAIRS + 2
        ),
    ),
    HARD_NAME: Recipe(
        vocab=hard_task.VOCAB,
        sequence=hard_task.training_sequence,
        held_out=lambda count: conditions.mixed(count, HELD_OUT_SEED),
        architecture=dict(
            n_positions=64, n_embd=128, n_layer=4, n_head=4, n_inner=512, max_prompt_tokens=hard_task.MAX_PROMPT_TOKENS
        ),
        steps=1500,
        lr=3e-3,
        queries=6,
        label_smoothing=0.1,
        conditions=tuple(conditions.CONDITIONS),
        parts=hard_task.parts,
        threads=1,
    ),
}


def tokenizer(vocab: list[str] = task.VOCAB) -> PreTrainedTokenizerFast:
    """The word-level tokenizer of a task vocabulary (whitespace split, offsets available)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )


def model_config(name: str = DEMO_NAME) -> GPT2Config:
    recipe = RECIPES[name]
    shape = dict(recipe.architecture)
    longest = shape.pop("max_prompt_tokens")
    return GPT2Config(
        vocab_size=len(recipe.vocab),
        **shape,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        task_specific_params={"heta_demo": {"max_prompt_tokens": longest}},
    )


def batch(
    rng: random.Random, size: int, ids: dict[str, int], queries: int, sequence: Callable = task.training_sequence
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids [B, L], answer ids [B, Q], positions predicting them [B, Q]).

    Each training sequence asks ``queries`` questions about one context: Q supervised answers per
    forward instead of one. An evaluation prompt is a context and one question.
    """
    rows, answers, positions = [], [], []
    for _ in range(size):
        words, where, said = sequence(rng, queries)
        rows.append([ids[w] for w in words])
        answers.append([ids[a] for a in said])
        positions.append(where)
    length = max(len(r) for r in rows)
    inputs = torch.zeros(size, length, dtype=torch.long)
    for i, r in enumerate(rows):
        inputs[i, : len(r)] = torch.tensor(r)
    return inputs, torch.tensor(answers), torch.tensor(positions)


@torch.no_grad()
def factored_embeddings(network, ids: dict[str, int], parts: Callable[[str], list[str]]) -> None:
    """Start each word's embedding as the sum of random vectors of its parts ("f=3" = key f + value 3
    + "="), drawn from the seeded torch generator; words without parts keep GPT-2's init.

    A compound token's parts are otherwise learned separately from its own occurrences: with 704
    words that sat on the "say some value" plateau for 1,000+ steps; with shared parts, matching a
    key and reading its value work within 250 (docs/evaluation.md)."""
    weight = network.get_input_embeddings().weight
    vectors: dict[str, torch.Tensor] = {}
    for word, row in sorted(ids.items(), key=lambda item: item[1]):
        names = parts(word)
        for name in names:
            if name not in vectors:
                vectors[name] = torch.randn(weight.shape[1]) * network.config.initializer_range
        if names:
            weight[row] = sum(vectors[name] for name in names)


@torch.no_grad()
def accuracy(model, examples: list[task.Example], ids: dict[str, int]) -> float:
    """Greedy next-token accuracy on the answer."""
    return sum(correct(model, examples, ids)) / len(examples)


@torch.no_grad()
def correct(model, examples: list[task.Example], ids: dict[str, int], batch: int = 256) -> list[bool]:
    """Whether the model's greedy next token is each example's answer.

    Prompts are batched, padded on the right: under causal attention and absolute positions the
    padding after a prompt's last token changes nothing before it."""
    model.eval()
    out = []
    for lo in range(0, len(examples), batch):
        part = examples[lo : lo + batch]
        rows = [[ids[w] for w in e.words] for e in part]
        inputs = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            inputs[i, : len(r)] = torch.tensor(r)
        logits = model(input_ids=inputs).logits[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]
        out += [int(p) == ids[e.answer] for p, e in zip(logits.argmax(-1), part, strict=True)]
    return out


def train(
    out: str | Path,
    *,
    model: str = DEMO_NAME,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int | None = None,
    queries: int | None = None,
    lr: float | None = None,
    held_out: int = 500,
    log=print,
) -> dict:
    """Train, save model + tokenizer (safetensors) to ``out``, return the training report.

    Unset options take the shipped run's values (:data:`RECIPES`). The report holds the accuracy on
    ``held_out`` held-out examples and, for heta-demo-hard, on ``held_out // 2`` of each condition."""
    recipe = RECIPES[model]
    threads = torch.get_num_threads()
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    try:
        return _train(
            Path(out),
            recipe,
            model,
            seed,
            steps or recipe.steps,
            batch_size or recipe.batch_size,
            queries or recipe.queries,
            lr or recipe.lr,
            held_out,
            log,
        )
    finally:
        torch.set_num_threads(threads)


def _train(
    out: Path,
    recipe: Recipe,
    model: str,
    seed: int,
    steps: int,
    batch_size: int,
    queries: int,
    lr: float,
    held_out: int,
    log,
) -> dict:
    torch.manual_seed(seed)
    rng = random.Random(1000 + seed)
    vocab = tokenizer(recipe.vocab)
    ids = vocab.get_vocab()
    network = GPT2LMHeadModel(model_config(model))
    if recipe.parts is not None:
        factored_embeddings(network, ids, recipe.parts)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    checks = recipe.held_out(held_out)
    started = time.perf_counter()
    for step in range(steps):
        network.train()
        inputs, answers, positions = batch(rng, batch_size, ids, queries, recipe.sequence)
        logits = network(input_ids=inputs).logits.gather(1, positions[..., None].expand(-1, -1, len(ids)))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, len(ids)), answers.reshape(-1), label_smoothing=recipe.label_smoothing
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % 250 == 0:
            per = "".join(
                f"  {c} {accuracy(network, conditions.examples(40, HELD_OUT_SEED, c, model), ids):.2f}"
                for c in recipe.conditions
            )
            log(
                f"step {step + 1}/{steps}  loss {loss.item():.4f}  held-out accuracy "
                f"{accuracy(network, checks[:200], ids):.3f}{per}  {time.perf_counter() - started:.0f}s"
            )
    seconds = round(time.perf_counter() - started, 1)
    report = {
        "model": model,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "queries": queries,
        "lr": lr,
        "label_smoothing": recipe.label_smoothing,
        "held_out_accuracy": accuracy(network, checks, ids),
        "held_out_examples": len(checks),
        "train_seconds": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if recipe.conditions:
        report["condition_accuracy"] = {
            name: accuracy(network, conditions.examples(held_out // 2, HELD_OUT_SEED, name, model), ids)
            for name in recipe.conditions
        }
        report["condition_examples"] = held_out // 2
    out.mkdir(parents=True, exist_ok=True)
    network.eval()
    network.save_pretrained(out, safe_serialization=True)
    vocab.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
