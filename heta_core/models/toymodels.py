"""Small random models and a word-level tokenizer, built in code (no downloads).

For tests, benchmarks and examples: every supported family at toy size, float64 by default so that
fast and reference paths can be compared to many digits. Weights are random (seeded); the larger
``initializer_range`` makes the toy predictions far from uniform, so the scores are not all ~0.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CORPUS = (
    "the cat sat on the mat . the dog ate the bone . a bird can fly over the tree . "
    "she gave him the key to the red door . paris is the capital of france . "
    "water boils at one hundred degrees . the answer is four ."
)
SPECIAL = ["[UNK]", "[PAD]", "[BOS]", "[EOS]", "[SYSTEM]", "[USER]", "[ASSISTANT]", "[TOOL]", "[END]"]
# A chat template in the usual Jinja form: a role marker, the content, an end marker per message.
CHAT_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }} [END] {% endfor %}"
    "{% if add_generation_prompt %}[ASSISTANT] {% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over :data:`CORPUS` with a chat template (fast: it has offsets)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(CORPUS.split()))
    vocab = {token: i for i, token in enumerate(SPECIAL + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        additional_special_tokens=SPECIAL[4:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


TINY_VOCAB = len(SPECIAL) + len(set(CORPUS.split()))
_COMMON = dict(
    vocab_size=TINY_VOCAB,
    initializer_range=0.3,
    tie_word_embeddings=False,
    bos_token_id=2,
    eos_token_id=3,
    pad_token_id=1,
)
_LLAMA_LIKE = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128
)

TINY_CONFIGS = {
    "gpt2": lambda: GPT2Config(n_layer=2, n_embd=16, n_head=4, n_positions=128, **_COMMON),
    "gptj": lambda: GPTJConfig(n_layer=2, n_embd=16, n_head=4, rotary_dim=2, n_positions=128, **_COMMON),
    "gpt_neox": lambda: GPTNeoXConfig(
        num_hidden_layers=2,
        hidden_size=16,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=128,
        rotary_pct=0.5,
        attention_bias=True,
        **_COMMON,
    ),
    "llama": lambda: LlamaConfig(num_key_value_heads=2, **_LLAMA_LIKE, **_COMMON),
    "mistral": lambda: MistralConfig(num_key_value_heads=2, sliding_window=None, **_LLAMA_LIKE, **_COMMON),
    "qwen2": lambda: Qwen2Config(num_key_value_heads=2, **_LLAMA_LIKE, **_COMMON),
    "phi3": lambda: Phi3Config(num_key_value_heads=2, **_LLAMA_LIKE, **_COMMON),
    "gemma": lambda: GemmaConfig(num_key_value_heads=1, head_dim=8, **_LLAMA_LIKE, **_COMMON),
}


def tiny_model(
    family: str, *, dtype: torch.dtype = torch.float64, seed: int = 0, attn_implementation: str = "eager", **overrides
):
    """A random toy causal LM of ``family`` (a key of :data:`TINY_CONFIGS`)."""
    config = TINY_CONFIGS[family]()
    for key, value in overrides.items():
        setattr(config, key, value)
    return random_model(config, dtype=dtype, seed=seed, attn_implementation=attn_implementation)


def random_model(config, *, dtype: torch.dtype = torch.float32, seed: int = 0, attn_implementation: str = "sdpa"):
    """A causal LM with seeded random weights for ``config``, in eval mode."""
    torch.manual_seed(seed)
    config._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # Transformers initialises biases to zero, which would leave bias handling (e.g. Qwen2's value
    # bias) untested; random biases make it matter.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias") and param.dim() == 1 and "norm" not in name and "ln" not in name:
                param.normal_(0.0, 0.5 * config.initializer_range)
    return model.eval()


def gpt2_shaped(
    layers: int = 6, width: int = 512, heads: int = 8, vocab: int = 50257, positions: int = 1024
) -> GPT2Config:
    """The benchmark shape from the issue: GPT-2 layout, random weights."""
    return GPT2Config(n_layer=layers, n_embd=width, n_head=heads, vocab_size=vocab, n_positions=positions)


def llama_shaped(
    layers: int = 16,
    width: int = 2048,
    heads: int = 32,
    kv_heads: int = 8,
    ffn: int = 8192,
    vocab: int = 128256,
    positions: int = 4096,
) -> LlamaConfig:
    """A Llama-3.2-1B-class layout (GQA, RMSNorm, rotary, SwiGLU), random weights: the GPU benchmark's second shape."""
    return LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=width,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        max_position_embeddings=positions,
        tie_word_embeddings=False,
    )
