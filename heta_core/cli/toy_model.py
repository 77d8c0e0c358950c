"""``heta toy-model PATH``: a tiny random model and tokenizer on disk, for trying things offline."""

from __future__ import annotations

import os

from .usage import UsageError


def register(commands) -> None:
    parser = commands.add_parser(
        "toy-model", help="write a tiny random model + tokenizer to PATH (for trying things offline)"
    )
    parser.add_argument("path")
    parser.add_argument("--family", default="gpt2", help="gpt2, gptj, gpt_neox, llama, mistral, qwen2, phi3, gemma")
    parser.set_defaults(run=_run_toy_model)


def _run_toy_model(args) -> int:
    from ..models.toymodels import TINY_CONFIGS, tiny_model, tiny_tokenizer

    if args.family not in TINY_CONFIGS:
        raise UsageError(f"--family must be one of {', '.join(TINY_CONFIGS)}")
    if os.path.exists(args.path) and os.listdir(args.path):
        raise UsageError(f"{args.path} exists and is not empty")
    tiny_model(args.family).save_pretrained(args.path)
    tiny_tokenizer().save_pretrained(args.path)
    print(f"wrote a random {args.family} toy model (its scores mean nothing) to {args.path}")
    return 0
