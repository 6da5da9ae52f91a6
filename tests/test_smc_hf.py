"""SMC with Hugging Face models: KV-cache reordering and end-to-end generation.

Models are tiny and randomly initialised from configs (no downloads); the
tokenizers are the real ones under ``../shared/tokenizers`` (tests skip if
missing). ``initializer_range`` is raised so that random logits depend
strongly on the context (with the default 0.02 every distribution is almost
uniform and a wrong cache row would go unnoticed).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import List

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny local models and tokenizers only

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
regex = pytest.importorskip("regex")

import tokensieve as ts  # noqa: E402
from tokensieve import smc  # noqa: E402
from tokensieve.models import HFModel, LanguageModel, as_language_model, reorder_past_key_values  # noqa: E402

from conftest import tokenizer_path  # noqa: E402

ATOL = 1e-4


def tiny_llama(vocab_size: int, seed: int = 0, init: float = 0.3):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=init,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2(vocab_size: int, seed: int = 0, init: float = 0.3):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=512, initializer_range=init,
        bos_token_id=1, eos_token_id=2,
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


class LegacyTupleLM(torch.nn.Module):
    """A one-layer attention LM whose cache is a legacy tuple ``((k, v),)``,
    to exercise the tuple path of ``reorder_past_key_values``."""

    def __init__(self, vocab_size: int = 50, dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab_size, dim)
        self.pos = torch.nn.Embedding(256, dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, vocab_size)
        self.config = SimpleNamespace(bos_token_id=0)

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        past_len = 0 if past_key_values is None else past_key_values[0][0].shape[1]
        pos = torch.arange(past_len, past_len + input_ids.shape[1])
        h = self.emb(input_ids) + self.pos(pos)[None]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        if past_key_values is not None:
            k = torch.cat([past_key_values[0][0], k], dim=1)
            v = torch.cat([past_key_values[0][1], v], dim=1)
        scores = q @ k.transpose(1, 2) / 4.0
        total = k.shape[1]
        causal = torch.arange(total)[None, :] <= (torch.arange(input_ids.shape[1]) + past_len)[:, None]
        scores = scores.masked_fill(~causal, float("-inf"))
        logits = self.out(torch.softmax(scores, dim=-1) @ v) * 3.0
        return SimpleNamespace(logits=logits, past_key_values=((k, v),))


MODELS = {
    "llama": lambda v: tiny_llama(v),
    "gpt2": lambda v: tiny_gpt2(v),
    "legacy-tuple": lambda v: LegacyTupleLM(v),
}


def logprobs_from_scratch(model, histories: List[List[int]]):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(histories, dtype=torch.long), use_cache=True)
    return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)


# --------------------------------------------------------------------------
# KV cache reordering
# --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", list(MODELS))
def test_reordered_cache_equals_recomputation(arch):
    vocab = 50
    model = MODELS[arch](vocab)
    hf = HFModel(model)
    assert isinstance(hf, LanguageModel)
    gen = torch.Generator().manual_seed(0)
    prompt = [3, 17, 5]
    n = 4
    st = hf.start(prompt, n)
    hist = [list(prompt) for _ in range(n)]
    lp = hf.next_logprobs(st, None)
    assert lp.shape == (n, vocab)
    assert torch.allclose(lp, logprobs_from_scratch(model, hist), atol=ATOL)
    # Steps with resampling-like reorders: duplicates, drops, and growth.
    for rows in ([0, 1, 2, 3], [2, 2, 0], [1, 1, 1, 0, 2], [4, 0, 3, 3, 1, 2]):
        if rows != list(range(len(hist))):
            st = hf.reorder(st, torch.tensor(rows))
            hist = [list(hist[r]) for r in rows]
        toks = torch.randint(0, vocab, (len(hist),), generator=gen)
        lp = hf.next_logprobs(st, toks)
        for h, t in zip(hist, toks.tolist()):
            h.append(t)
        ref = logprobs_from_scratch(model, hist)
        assert lp.shape == ref.shape
        assert torch.allclose(lp, ref, atol=ATOL), (lp - ref).abs().max()
        # Rows really differ (the check above is not vacuous).
        assert (ref[0] - ref[-1]).abs().max() > 1e-2 or hist[0] == hist[-1]


@pytest.mark.parametrize("arch", list(MODELS))
def test_prompt_forward_computes_last_logits_only(arch):
    """The prompt's forward asks for the last position's logits only
    (``logits_to_keep=1``) where the model's forward takes it (Llama and
    GPT-2 in transformers >= 4.45); a model without that keyword is called
    as before. Either way the first log-probs are those of the prompt."""
    import inspect

    model = MODELS[arch](50)
    params = inspect.signature(model.forward).parameters
    positions = 1 if {"logits_to_keep", "num_logits_to_keep"} & set(params) else 17
    assert positions == 17 or arch != "legacy-tuple"
    hf = HFModel(model)
    shapes = []
    hook = model.register_forward_hook(lambda mod, args, out: shapes.append(tuple(out.logits.shape)))
    prompt = list(range(3, 20))
    st = hf.start(prompt, 2)
    hook.remove()
    assert shapes == [(1, positions, 50)]
    lp = hf.next_logprobs(st, None)
    assert torch.allclose(lp, logprobs_from_scratch(model, [prompt, prompt]), atol=ATOL)


def test_reorder_before_first_step_and_errors():
    model = tiny_llama(40)
    hf = HFModel(model)
    st = hf.start([5, 6], 3)
    st = hf.reorder(st, torch.tensor([0, 2]))  # pending first-step log-probs follow
    lp = hf.next_logprobs(st, None)
    assert lp.shape == (2, 40)
    with pytest.raises(RuntimeError):
        hf.next_logprobs(st, None)
    with pytest.raises(ValueError):
        hf.next_logprobs(st, torch.tensor([1, 2, 3]))
    # Empty prompt: starts from the config's BOS.
    st = hf.start([], 2)
    assert torch.allclose(hf.next_logprobs(st, None), logprobs_from_scratch(model, [[1], [1]]), atol=ATOL)


def test_reorder_past_key_values_tuple_and_cache():
    rows = torch.tensor([2, 0, 0])
    t = [torch.randn(3, 2, 4, 5) for _ in range(4)]
    legacy = ((t[0], t[1]), (t[2], t[3]))
    out = reorder_past_key_values(legacy, rows)
    assert isinstance(out, tuple) and isinstance(out[0], tuple)
    for a, b in zip((x for layer in out for x in layer), t):
        assert torch.equal(a, b[rows])
    cache = transformers.DynamicCache()
    cache.update(t[0].clone(), t[1].clone(), 0)
    cache = reorder_past_key_values(cache, rows)
    keys = cache.layers[0].keys if hasattr(cache, "layers") else cache.key_cache[0]  # transformers < 4.56
    assert torch.equal(keys, t[0][rows])
    assert reorder_past_key_values(None, rows) is None
    with pytest.raises(TypeError):
        reorder_past_key_values(object(), rows)


class CheckingModel:
    """Wraps HFModel; tracks every row's token history through the driver's
    calls and checks each step's log-probs against a from-scratch forward."""

    def __init__(self, model):
        self.model = model
        self.inner = HFModel(model)
        self.max_err = 0.0
        self.reorders = 0
        self.checked = 0

    def start(self, prompt_ids, n):
        self.hist = [list(prompt_ids) for _ in range(n)]
        return self.inner.start(prompt_ids, n)

    def next_logprobs(self, state, last_tokens):
        if last_tokens is not None:
            for h, t in zip(self.hist, last_tokens.tolist()):
                h.append(t)
        lp = self.inner.next_logprobs(state, last_tokens)
        ref = logprobs_from_scratch(self.model, self.hist)
        self.max_err = max(self.max_err, float((lp - ref).abs().max()))
        self.checked += 1
        return lp

    def reorder(self, state, rows):
        self.reorders += 1
        self.hist = [list(self.hist[r]) for r in rows.tolist()]
        return self.inner.reorder(state, rows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_driver_reorders_cache_consistently(arch):
    # A plain vocabulary of 40 one-letter tokens + EOS; the model is random.
    letters = [bytes([c]) for c in b"abcdefghijklmnopqrstuvwxyz0123456789 .,!"]
    vocab = ts.Vocabulary(token_bytes=letters + [None], eos_token_ids=[len(letters)])
    model = MODELS[arch](len(letters) + 1)
    chk = CheckingModel(model)
    c = ts.compile_regex(r"[a-f]{2,6}( [0-9]{1,3})?", vocab)
    res = smc.generate(chk, None, [3, 4, 5], c, n_particles=12, ess_threshold=1.0, max_new_tokens=10, seed=0, vocab=vocab)
    assert any(res.resampled) and chk.reorders >= 1
    assert chk.checked == res.num_steps
    assert chk.max_err < ATOL
    for tb, st in zip(res.text_bytes, res.status):
        if st == "eos":
            assert regex.fullmatch(rb"[a-f]{2,6}( [0-9]{1,3})?", tb)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("sampler", ["awrs", "mask"])
def test_potentials_driver_reorders_cache_consistently(arch, sampler):
    letters = [bytes([c]) for c in b"abcdefghijklmnopqrstuvwxyz0123456789 .,!"]
    vocab = ts.Vocabulary(token_bytes=letters + [None], eos_token_ids=[len(letters)])
    model = MODELS[arch](len(letters) + 1)
    chk = CheckingModel(model)
    c = ts.compile_regex(r"[a-f]{2,6}( [0-9]{1,3})?", vocab)
    res = smc.generate(chk, None, [3, 4, 5], c, potentials=[lambda s: b"e" not in s], sampler=sampler,
                       n_particles=12, ess_threshold=1.0, max_new_tokens=10, seed=0, vocab=vocab)
    assert any(res.resampled) and chk.reorders >= 1
    assert chk.checked == res.num_steps
    assert chk.max_err < ATOL
    for tb, st in zip(res.text_bytes, res.status):
        if st == "eos":
            assert regex.fullmatch(rb"[a-df]{2,6}( [0-9]{1,3})?", tb)


class LogprobsOnly:
    """HFModel behind the bare protocol (no ``next_logits``)."""

    def __init__(self, model):
        self.inner = HFModel(model)

    def start(self, prompt_ids, n):
        return self.inner.start(prompt_ids, n)

    def next_logprobs(self, state, last_tokens):
        return self.inner.next_logprobs(state, last_tokens)

    def reorder(self, state, rows):
        return self.inner.reorder(state, rows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("sampler", ["awrs", "mask", "direct"])
def test_potentials_driver_on_raw_logits_equals_logprobs(arch, sampler):
    """On the CPU the drivers read HFModel's raw logits (``next_logits``)
    and normalise them with the kernel: without a compiled constraint the
    excluded columns (a special token that is not EOS, embedding rows past
    the vocabulary) are part of the normaliser; with one, a full pass. The
    first step's row (the prompt's, repeated) is computed once.
    Same draws and the same log Z as with the log-softmaxed
    ``next_logprobs``."""
    letters = [bytes([c]) for c in b"abcdefgh "]
    vocab = ts.Vocabulary(token_bytes=letters + [None, None], eos_token_ids=[len(letters)])
    model = MODELS[arch](len(letters) + 5)  # a special non-EOS token and 3 padding columns
    hf = HFModel(model)
    assert callable(getattr(hf, "next_logits", None))
    st = hf.start([1, 2], 2)
    assert torch.allclose(torch.log_softmax(hf.next_logits(st, None), dim=-1),
                          logprobs_from_scratch(model, [[1, 2], [1, 2]]), atol=ATOL)
    rx = ts.compile_regex("[a-d]{1,3}( [a-h]{1,2})?", vocab)
    runs = [
        dict(potentials=[lambda s: b"e" not in s], sampler=sampler),  # static mask: the excluded columns
        dict(potentials=[lambda s: b"e" not in s], sampler=sampler, batch_potentials=True),
        dict(potentials=[rx, lambda s: b"ab" not in s], sampler=sampler),  # compiled mask: _row_log_norms
        dict(constraint=rx),  # the fully adapted driver: _row_log_norms
    ]
    for kw in runs:
        a = smc.generate(hf, None, [1, 2], n_particles=24, max_new_tokens=6, seed=3, vocab=vocab, **kw)
        b = smc.generate(LogprobsOnly(model), None, [1, 2], n_particles=24, max_new_tokens=6, seed=3, vocab=vocab, **kw)
        assert a.texts == b.texts and a.status == b.status
        assert np.isfinite(a.log_z) and a.log_z == pytest.approx(b.log_z, abs=1e-4)
        assert np.allclose(a.log_weights, b.log_weights, atol=1e-4)


class NaNColumn(HFModel):
    """HFModel whose logits hold NaN in one column from the second step."""

    col = 0

    def next_logits(self, state, last_tokens):
        out = super().next_logits(state, last_tokens)
        if last_tokens is not None:
            out = out.clone()
            out[:, self.col] = float("nan")
        return out


@pytest.mark.parametrize("col", [0, 9, 10, 12])  # a letter, EOS, a special token, a padding column
def test_nan_logits_are_an_error_on_the_raw_logits_path(col):
    """NaN in the logits is a ValueError wherever it is (a log_softmax would
    spread it over the row), never a silent dead row."""
    letters = [bytes([c]) for c in b"abcdefgh "]
    vocab = ts.Vocabulary(token_bytes=letters + [None, None], eos_token_ids=[len(letters)])
    model = MODELS["gpt2"](len(letters) + 5)
    bad = NaNColumn(model)
    bad.col = col
    rx = ts.compile_regex("[a-d]{1,3}( [a-h]{1,2})?", vocab)
    for kw in (dict(potentials=[lambda s: True]), dict(potentials=[rx, lambda s: True]), dict(constraint=rx)):
        with pytest.raises(ValueError, match="NaN"):
            smc.generate(bad, None, [1, 2], n_particles=8, max_new_tokens=4, seed=0, vocab=vocab, **kw)


# --------------------------------------------------------------------------
# End to end with real tokenizers
# --------------------------------------------------------------------------


def load_hf_tokenizer(name: str):
    path = tokenizer_path(name)
    if path.name.endswith(".gz"):
        pytest.skip("gzipped tokenizer")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path.parent))
    except OSError:  # older transformers want a config.json beside a tokenizer_config.json without a class
        return transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))


def check_language(res, pattern: str):
    rx = regex.compile(pattern.encode())
    for tb, st in zip(res.text_bytes, res.status):
        if st == "eos":
            assert rx.fullmatch(tb) is not None, tb
        elif st == "max_new_tokens":
            assert rx.fullmatch(tb, partial=True) is not None, tb
        else:
            assert st == "dead"
    for k in res.posterior(as_bytes=True):
        assert rx.fullmatch(k, partial=True) is not None


@pytest.mark.parametrize("name", ["gpt2", "llama-3-8b-instruct"])
def test_generate_end_to_end_real_tokenizer(name):
    tok = load_hf_tokenizer(name)
    model = tiny_llama(len(tok), init=0.1)
    vocab = ts.Vocabulary.from_huggingface(tok)
    # Bounded language: every particle must finish with EOS.
    pattern = r"(yes|no|maybe)|[0-9]{1,3}(\.[0-9])?"
    res = smc.generate(model, tok, "The answer is:", pattern, n_particles=16, max_new_tokens=12, seed=0, vocab=vocab)
    assert res.status.count("eos") == 16
    check_language(res, pattern)
    assert np.isfinite(res.log_z) and res.log_z < 0
    assert sum(res.posterior().values()) == pytest.approx(1.0)
    # Unbounded language with a small token limit: viable prefixes.
    pattern2 = r"[a-z]+( [a-z]+)*\."
    res2 = smc.generate(model, tok, "Say:", pattern2, n_particles=8, max_new_tokens=4, seed=1, vocab=vocab)
    assert "max_new_tokens" in res2.status
    check_language(res2, pattern2)
    assert all(len(t) <= 4 for t in res2.token_ids)
    smc.format_result(res2)


@pytest.mark.parametrize("name", ["gpt2", "llama-3-8b-instruct"])
def test_generate_with_grammar_constraints(name):
    """Grammar constraints drive SMC like regexes: a bounded Lark grammar
    (every particle ends with EOS, each output parses as the JSON it
    describes) and the built-in JSON grammar (complete outputs parse;
    outputs cut at the token limit are viable prefixes: a fresh matcher
    accepts their tokens)."""
    import json

    tok = load_hf_tokenizer(name)
    model = tiny_llama(len(tok), init=0.1)
    vocab = ts.Vocabulary.from_huggingface(tok)
    lark = r"""
        start: "{\"ok\": " BOOL ", \"n\": " DIGIT "}"
        BOOL: "true" | "false"
        DIGIT: /[0-9]/
    """
    g = ts.compile_grammar(lark, vocab)
    res = smc.generate(model, tok, "JSON:", g, n_particles=16, max_new_tokens=24, seed=0, vocab=vocab)
    assert res.status.count("eos") == 16
    for text in res.texts:
        obj = json.loads(text)
        assert set(obj) == {"ok", "n"} and isinstance(obj["ok"], bool) and 0 <= obj["n"] <= 9
    assert np.isfinite(res.log_z) and res.log_z < 0

    j = ts.compile_json(vocab, whitespace="compact")
    res2 = smc.generate(model, tok, "JSON:", j, n_particles=16, max_new_tokens=8, seed=1, vocab=vocab)
    assert set(res2.status) <= {"eos", "max_new_tokens"}
    for ids, text, st in zip(res2.token_ids, res2.texts, res2.status):
        if st == "eos":
            json.loads(text)
        m = ts.Matcher(j)
        assert all(m.consume_token(t) for t in ids), text


def test_generate_with_tokenizers_tokenizer_and_raw_ids():
    tokenizers = pytest.importorskip("tokenizers")
    path = tokenizer_path("gpt2")
    tk = tokenizers.Tokenizer.from_file(str(path))
    model = tiny_gpt2(tk.get_vocab_size(), init=0.1)
    pattern = r"(red|green|blue)"
    # Regex string + tokenizers.Tokenizer (vocabulary built from it).
    res = smc.generate(model, tk, "Color:", pattern, n_particles=8, max_new_tokens=8, seed=3)
    check_language(res, pattern)
    assert res.status.count("eos") == 8
    # Token-id prompt and a compiled constraint; determinism.
    vocab = ts.Vocabulary(tokenizer_json=tk.to_str())
    c = ts.compile_regex(pattern, vocab)
    ids = tk.encode("Color:").ids
    a = smc.generate(model, None, ids, c, n_particles=8, max_new_tokens=8, seed=3, vocab=vocab)
    assert a.token_ids == res.token_ids and a.log_z == res.log_z
    assert isinstance(as_language_model(model), HFModel)


def test_model_logits_wider_than_vocab():
    # Embedding matrices are often padded beyond the tokenizer: the extra
    # columns are never allowed.
    tok = load_hf_tokenizer("gpt2")
    model = tiny_llama(len(tok) + 47, init=0.1)
    pattern = r"[0-9]{2}"
    res = smc.generate(model, tok, "n=", pattern, n_particles=8, max_new_tokens=6, seed=0)
    check_language(res, pattern)
    assert all(t < len(tok) for ids in res.token_ids for t in ids)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_no_deprecation_warnings_and_dynamic_cache(arch):
    """transformers 5.x deprecates ``past_key_values=`` (now ``cache=``) and
    legacy tuple caches: our code paths (the compiled-constraint driver, the
    potentials driver with resampling, HFModel itself) must not trigger any
    DeprecationWarning / FutureWarning, and the cache is a DynamicCache."""
    import warnings

    toks = [bytes([c]) for c in b"abcdefgh"] + [None]
    vocab = ts.Vocabulary(token_bytes=toks, eos_token_ids=[len(toks) - 1])
    model = MODELS[arch](len(toks))
    # The cache type this transformers' model makes by itself: a Cache object
    # (DynamicCache) on recent versions, legacy tuples on old ones (4.40).
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[1]]), use_cache=True)
    native = getattr(out, "cache", None)
    if native is None:
        native = getattr(out, "past_key_values", None)
    expected = transformers.DynamicCache if isinstance(native, transformers.Cache) else tuple
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lm = HFModel(model)
        state = lm.start([1, 2], 3)
        assert isinstance(state.past_key_values, expected)
        lm.next_logprobs(state, None)
        lm.reorder(state, torch.tensor([2, 0]))
        lm.next_logprobs(state, torch.tensor([3, 4]))
        assert isinstance(state.past_key_values, expected)
        smc.generate(model, None, [1, 2], "[a-h]{2,6}", n_particles=16, seed=0, vocab=vocab,
                     max_new_tokens=6, ess_threshold=1.0)
        smc.generate(model, None, [1, 2], potentials=[lambda s: b"e" not in s], n_particles=16, seed=0,
                     vocab=vocab, max_new_tokens=6, ess_threshold=1.0)
    bad = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning))]
    assert not bad, [str(w.message) for w in bad]
