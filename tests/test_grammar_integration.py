"""Grammars through the same machinery as regexes: the transformers logits
processor and SMC generation (tiny random-weight models, real tokenizers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tokensieve as ts  # noqa: E402
from tokensieve import smc  # noqa: E402
from tokensieve.hf import LogitsProcessor  # noqa: E402
from conftest import tokenizer_path  # noqa: E402

ARITH = r"""
start: sum
sum: sum "+" product | product
product: product "*" atom | atom
atom: NUMBER | "(" sum ")"
NUMBER: /[1-9][0-9]{0,2}|0/
"""

YES_NO_GBNF = r"""
root ::= answer ("," answer)* "."
answer ::= "yes" | "no"
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpt2():
    path = tokenizer_path("gpt2")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>",
                                               pad_token="<|endoftext|>")
    tok.padding_side = "left"
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=len(tok), n_positions=256)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    for c in (model.config, model.generation_config):
        c.eos_token_id = c.pad_token_id = c.bos_token_id = tok.eos_token_id
    vocab = ts.Vocabulary.from_huggingface(tok, eos_token_ids=[tok.eos_token_id])
    return tok, model, vocab


def rows(tok, out, prompt_len):
    eos = tok.eos_token_id
    for row in out[:, prompt_len:].tolist():
        if eos in row:
            yield row[: row.index(eos)], True
        else:
            yield row, False


def check(vocab, constraint, ids, ended, full_check):
    m = ts.Matcher(constraint)
    assert m.consume_tokens(ids) == len(ids)
    text = b"".join(vocab.token_bytes(t) for t in ids).decode("utf-8", errors="replace")
    if ended:
        assert m.is_accepting()
        full_check(text)
    return text


def arith_value_ok(text):
    assert text and eval(text, {"__builtins__": {}}) is not None  # noqa: S307 (digits, + * ( ) only)
    assert set(text) <= set("0123456789+*()")


@pytest.mark.parametrize("do_sample", [False, True])
def test_processor_with_lark_grammar(gpt2, do_sample):
    tok, model, vocab = gpt2
    c = ts.compile_grammar(ARITH, vocab)
    proc = LogitsProcessor(c, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
    enc = tok(["Compute:", "A longer prompt here, then:"], return_tensors="pt", padding=True)
    torch.manual_seed(3)
    kw = dict(do_sample=True, num_return_sequences=3) if do_sample else dict(do_sample=False)
    with torch.no_grad():
        out = model.generate(**enc, logits_processor=transformers.LogitsProcessorList([proc]),
                             max_new_tokens=24, **kw)
    for ids, ended in rows(tok, out, enc["input_ids"].shape[1]):
        check(vocab, c, ids, ended, arith_value_ok)


def test_processor_with_json_and_gbnf(gpt2):
    tok, model, vocab = gpt2
    for c, full in [
        (ts.compile_json(vocab, whitespace="compact", max_depth=4), json.loads),
        (ts.compile_grammar(YES_NO_GBNF, vocab, syntax="gbnf"),
         lambda t: all(a in ("yes", "no") for a in t[:-1].split(",")) and t.endswith(".")),
    ]:
        proc = LogitsProcessor(c, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
        enc = tok(["x", "y y"], return_tensors="pt", padding=True)
        torch.manual_seed(5)
        with torch.no_grad():
            out = model.generate(**enc, logits_processor=transformers.LogitsProcessorList([proc]),
                                 max_new_tokens=20, do_sample=True, num_return_sequences=2)
        for ids, ended in rows(tok, out, enc["input_ids"].shape[1]):
            check(vocab, c, ids, ended, full)


def test_smc_with_grammar(gpt2):
    tok, model, vocab = gpt2
    c = ts.compile_grammar(YES_NO_GBNF, vocab, syntax="gbnf")
    res = smc.generate(model, tok, "Answers:", c, n_particles=16, max_new_tokens=10, seed=1, vocab=vocab)
    assert np.isfinite(res.log_z)
    for ids, st in zip(res.token_ids, res.status):
        m = ts.Matcher(c)
        assert m.consume_tokens(ids) == len(ids)
        if st == "eos":
            assert m.is_accepting()
    post = res.posterior()
    assert sum(post.values()) == pytest.approx(1.0)
    assert any(k.endswith(".") for k in post)


def test_smc_with_json(gpt2):
    tok, model, vocab = gpt2
    c = ts.compile_json(vocab, whitespace="compact", max_depth=3)
    res = smc.generate(model, tok, "JSON:", c, n_particles=8, max_new_tokens=12, seed=2, vocab=vocab)
    for text, st in zip(res.texts, res.status):
        if st == "eos":
            json.loads(text)
