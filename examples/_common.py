"""Shared by the examples: a model and tokenizer that work offline.

Without ``--model`` the examples use a tiny GPT-2 with *random* weights and
the real GPT-2 tokenizer shipped with tokensieve, so they run anywhere
without downloads (what they write is then random, but always satisfies
the constraints). With ``--model PATH`` (a local Hugging Face model
directory) they use that model and its tokenizer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tokensieve as ts
from tokensieve import smc

GPT2_TOKENIZER = Path(ts.__file__).parent / "data" / "gpt2_tokenizer.json"
GPT2_EOS = 50256


def parser(description: str, *, particles: int = 16, max_new_tokens: int = 32) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=None, help="local Hugging Face model directory (default: tiny random GPT-2)")
    p.add_argument("--particles", type=int, default=particles, help=f"SMC particles (default: {particles})")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--sampler", default="awrs", choices=smc.SAMPLERS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=2, help="layers of the tiny random model")
    return p


def load_model(path: Optional[str], seed: int = 0, layers: int = 2) -> Tuple[Any, Any, ts.Vocabulary]:
    """``(model, tokenizer, vocabulary)``."""
    import torch
    import transformers

    if path:
        tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
        return model, tok, ts.Vocabulary.from_huggingface(tok)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(GPT2_TOKENIZER))
    vocab = ts.Vocabulary.from_tokenizer_file(GPT2_TOKENIZER, eos_token_ids=[GPT2_EOS])
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=layers, n_embd=64, n_head=4, vocab_size=vocab.vocab_size, n_positions=256,
        bos_token_id=GPT2_EOS, eos_token_id=GPT2_EOS,
    )
    return transformers.GPT2LMHeadModel(cfg).eval(), tok, vocab


def report(res: smc.SMCResult, out: Any = None, top: int = 8, extra: Sequence[str] = ()) -> None:
    """Print the weighted posterior and the potential-call statistics."""
    import sys

    out = out or sys.stdout
    print(smc.format_result(res, top=top), file=out)
    for line in extra:
        print(line, file=out)
