"""Train ``heta-demo`` from a seed: ``heta train-demo --out DIR [--seed S] [--steps N]``.

A 2-layer GPT-2 (d=64, 4 heads) learns the retrieval task of :mod:`heta_core.demo.task`, with the
loss on the answer tokens only. The run is seeded (weights and data: same seed and thread count, same weights);
on 2 CPU cores it takes about a minute, the README lists the measured time and accuracy.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from . import task

HELD_OUT_SEED = 0  # evaluation examples; training draws from seeds >= 1000


def tokenizer() -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the task vocabulary (whitespace split, offsets available)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(task.VOCAB)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )


def model_config() -> GPT2Config:
    words = 2 * task.MAX_PAIRS + 2
    return GPT2Config(
        vocab_size=len(task.VOCAB), n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=256,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        task_specific_params={"heta_demo": {"max_prompt_tokens": words}},
    )  # fmt: skip


def batch(rng: random.Random, size: int, ids: dict[str, int], queries: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids [B, L], answer ids [B, Q], positions predicting them [B, Q]).

    Each training sequence asks ``queries`` questions about one set of pairs ("… ? b 7 ? k 3 ? f 3"):
    Q supervised answers per forward instead of one. An evaluation prompt is its first question.
    """
    rows, answers, positions = [], [], []
    for _ in range(size):
        e = task.example(rng)
        pairs = e.words[: e.candidates]
        keys, values = [p.split("=")[0] for p in pairs], [p.split("=")[1] for p in pairs]
        asked = [rng.randrange(len(keys)) for _ in range(queries)]
        words = list(pairs)
        where = []
        for q in asked:
            words += [task.QUERY, keys[q], values[q]]
            where.append(len(words) - 2)
        rows.append([ids[w] for w in words])
        answers.append([ids[values[q]] for q in asked])
        positions.append(where)
    length = max(len(r) for r in rows)
    inputs = torch.zeros(size, length, dtype=torch.long)
    for i, r in enumerate(rows):
        inputs[i, : len(r)] = torch.tensor(r)
    return inputs, torch.tensor(answers), torch.tensor(positions)


@torch.no_grad()
def accuracy(model, examples: list[task.Example], ids: dict[str, int]) -> float:
    """Greedy next-token accuracy on the answer."""
    model.eval()
    correct = 0
    for e in examples:
        logits = model(input_ids=torch.tensor([[ids[w] for w in e.words]])).logits[0, -1]
        correct += int(int(logits.argmax()) == ids[e.answer])
    return correct / len(examples)


def train(
    out: str | Path, *, seed: int = 0, steps: int = 1500, batch_size: int = 64, queries: int = 4, lr: float = 3e-3, log=print
) -> dict:
    """Train, save model + tokenizer (safetensors) to ``out``, return the training report."""
    torch.manual_seed(seed)
    rng = random.Random(1000 + seed)
    vocab = tokenizer()
    ids = vocab.get_vocab()
    model = GPT2LMHeadModel(model_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    held_out = task.examples(500, HELD_OUT_SEED)
    started = time.perf_counter()
    for step in range(steps):
        model.train()
        inputs, answers, positions = batch(rng, batch_size, ids, queries)
        logits = model(input_ids=inputs).logits.gather(1, positions[..., None].expand(-1, -1, len(ids)))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(ids)), answers.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % 250 == 0:
            log(f"step {step + 1}/{steps}  loss {loss.item():.4f}  held-out accuracy {accuracy(model, held_out[:200], ids):.3f}  {time.perf_counter() - started:.0f}s")
    report = {
        "seed": seed, "steps": steps, "batch_size": batch_size, "queries": queries, "lr": lr,
        "held_out_accuracy": accuracy(model, held_out, ids), "held_out_examples": len(held_out),
        "train_seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
    }  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    vocab.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
