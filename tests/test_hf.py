"""tokensieve.hf.LogitsProcessor inside real ``model.generate`` calls.

Tiny random-weight models (so the content is arbitrary) with real tokenizers;
every returned row is checked independently of the matcher with the
``regex`` module: a row that ended with EOS must fully match the pattern, a
row cut off by ``max_new_tokens`` must be a viable prefix (partial match).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
regex = pytest.importorskip("regex")

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
)
from transformers import LogitsProcessor as HFLogitsProcessor  # noqa: E402

import tokensieve as ts  # noqa: E402
from tokensieve.hf import LogitsProcessor  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
SHIPPED_GPT2 = Path(ts.__file__).parent / "data" / "gpt2_tokenizer.json"

PHONE = r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"
DATE = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
JSONISH = r'\{"name": "[A-Z][a-z]{1,8}", "age": [1-9][0-9]?\}'
UNICODE = r"(café|naïve|日本語|Ελληνικά)( (café|naïve|日本語|Ελληνικά)){0,2}"
WORDS = r"[a-z]+( [a-z]+)*"  # unbounded: random weights rarely pick EOS

PROMPTS = ["The date is", "Hi", "Please write it down for the office, thanks:", "x"]

# name -> (file, eos/pad token, model class)
TOKENIZERS = {
    "gpt2": ("gpt2/tokenizer.json", "<|endoftext|>", "gpt2"),
    "llama3": ("llama-3-8b-instruct/tokenizer.json", "<|eot_id|>", "llama"),
    "phi3": ("phi-3-mini/tokenizer.json", "<|endoftext|>", "llama"),
}

_CACHE: dict = {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Env:
    """A real tokenizer, its tokensieve Vocabulary and a tiny random model."""

    def __init__(self, name: str, model_vocab: int | None = None):
        rel, eos, arch = TOKENIZERS[name]
        path = SHARED / rel
        if not path.exists():
            if name == "gpt2":
                path = SHIPPED_GPT2
            else:
                pytest.skip(f"shared tokenizer {path} not found")
        self.name = name
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos, pad_token=eos)
        self.tokenizer.padding_side = "left"
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        n_tok = len(self.tokenizer)
        self.model_vocab = model_vocab or n_tok
        self.vocab = ts.Vocabulary.from_huggingface(
            self.tokenizer, eos_token_ids=[self.eos_id], vocab_size=self.model_vocab
        )
        torch.manual_seed(1234)
        if arch == "gpt2":
            cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=self.model_vocab, n_positions=256)
            self.model = GPT2LMHeadModel(cfg)
        else:
            cfg = LlamaConfig(
                vocab_size=self.model_vocab,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=4,
                max_position_embeddings=256,
            )
            self.model = LlamaForCausalLM(cfg)
        self.model.eval()
        for c in (self.model.config, self.model.generation_config):
            c.eos_token_id = self.eos_id
            c.pad_token_id = self.pad_id
            c.bos_token_id = self.eos_id
        self.constraints: dict = {}

    def constraint(self, pattern: str) -> ts.Constraint:
        if pattern not in self.constraints:
            self.constraints[pattern] = ts.compile_regex(pattern, self.vocab)
        return self.constraints[pattern]

    def processor(self, pattern: str) -> LogitsProcessor:
        return LogitsProcessor(self.constraint(pattern), eos_token_ids=[self.eos_id], pad_token_id=self.pad_id)

    def generate(self, proc, prompts=PROMPTS, extra=(), **kw):
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True)
        enc.pop("token_type_ids", None)  # older transformers: generate() rejects them for these models
        with torch.no_grad():
            out = self.model.generate(
                **enc, logits_processor=LogitsProcessorList([*extra, proc]), **kw
            )
        self.last_result = out  # the full result when return_dict_in_generate=True
        if not torch.is_tensor(out):
            out = out.sequences
        return enc, out


def env(name: str, model_vocab: int | None = None) -> Env:
    key = (name, model_vocab)
    if key not in _CACHE:
        _CACHE[key] = Env(name, model_vocab)
    return _CACHE[key]


def check_rows(e: Env, pattern: str, out, prompt_len: int, max_new_tokens: int):
    """Check every row; return (number ended with EOS, number cut off)."""
    compiled = regex.compile(pattern)
    constraint = e.constraint(pattern)
    ended = cut = 0
    for row in out[:, prompt_len:].tolist():
        if e.eos_id in row:
            k = row.index(e.eos_id)
            content, tail = row[:k], row[k + 1 :]
            assert all(t == e.pad_id for t in tail), f"non-pad token after EOS: {row}"
        else:
            content, tail = row, None
        data = b"".join(e.vocab.token_bytes(t) for t in content)
        m = ts.Matcher(constraint)
        assert m.consume_tokens(content) == len(content), f"matcher rejects {data!r}"
        if tail is not None:
            text = data.decode("utf-8")  # a complete match is valid UTF-8
            assert compiled.fullmatch(text), f"{text!r} does not match {pattern!r}"
            assert m.consume_token(e.eos_id) and m.is_terminated()
            if e.vocab.spelling == "byte_level":  # independent decoder
                assert e.tokenizer.decode(content, clean_up_tokenization_spaces=False) == text
            ended += 1
        else:
            assert len(row) == max_new_tokens
            text = data.decode("utf-8", errors="ignore")  # may stop inside a character
            assert compiled.fullmatch(text, partial=True), f"{text!r} is no prefix of {pattern!r}"
            cut += 1
    return ended, cut


def left_padded(enc) -> bool:
    am = enc["attention_mask"]
    return bool((am[:, 0] == 0).any()) and bool((am[:, -1] == 1).all())


# --------------------------------------------------------------- generate()


@pytest.mark.parametrize(
    "name,pattern", [("gpt2", PHONE), ("gpt2", DATE), ("gpt2", JSONISH), ("llama3", PHONE), ("llama3", JSONISH)]
)
def test_greedy_batch_left_padded(name, pattern):
    e = env(name)
    proc = e.processor(pattern)
    enc, out = e.generate(proc, do_sample=False, max_new_tokens=30)
    assert left_padded(enc)
    assert out.shape[0] == len(PROMPTS)
    ended, cut = check_rows(e, pattern, out, enc["input_ids"].shape[1], 30)
    assert ended == len(PROMPTS) and cut == 0  # bounded patterns always finish
    assert proc.prompt_length == enc["input_ids"].shape[1]
    assert len(proc.mask_times) == out.shape[1] - enc["input_ids"].shape[1]
    assert all(t > 0 for t in proc.mask_times)


@pytest.mark.parametrize(
    "name,pattern", [("gpt2", PHONE), ("gpt2", JSONISH), ("gpt2", UNICODE), ("llama3", DATE), ("llama3", UNICODE)]
)
def test_sampling_num_return_sequences(name, pattern):
    e = env(name)
    proc = e.processor(pattern)
    torch.manual_seed(7)
    enc, out = e.generate(proc, do_sample=True, num_return_sequences=3, max_new_tokens=30)
    assert out.shape[0] == 3 * len(PROMPTS)
    assert len(proc.matchers) == 3 * len(PROMPTS)
    ended, cut = check_rows(e, pattern, out, enc["input_ids"].shape[1], 30)
    assert ended == 3 * len(PROMPTS)
    gen = out[:, enc["input_ids"].shape[1] :].tolist()
    assert len({tuple(r) for r in gen}) > 1, "sampling gave identical rows"


def test_sampling_is_reproducible_with_seed():
    e = env("gpt2")
    proc = e.processor(DATE)
    results = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        _, out = e.generate(proc, do_sample=True, num_return_sequences=3, max_new_tokens=20)
        results.append(out)
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


@pytest.mark.parametrize("name,pattern", [("gpt2", PHONE), ("gpt2", JSONISH), ("llama3", DATE)])
def test_beam_search(name, pattern):
    # Beam search reorders and duplicates rows between steps; every returned
    # beam must still be a full match.
    e = env(name)
    proc = e.processor(pattern)
    enc, out = e.generate(proc, do_sample=False, num_beams=4, num_return_sequences=2, max_new_tokens=30)
    assert out.shape[0] == 2 * len(PROMPTS)
    ended, cut = check_rows(e, pattern, out, enc["input_ids"].shape[1], 30)
    assert ended == 2 * len(PROMPTS) and cut == 0
    assert len(proc.matchers) == 4 * len(PROMPTS)  # one per running beam
    # One processor call per step: the generation was never restarted.
    assert proc.prompt_length == enc["input_ids"].shape[1]


def test_beam_sample_and_limit():
    e = env("gpt2")
    proc = e.processor(WORDS)
    torch.manual_seed(11)
    enc, out = e.generate(proc, do_sample=True, num_beams=3, max_new_tokens=8)
    ended, cut = check_rows(e, WORDS, out, enc["input_ids"].shape[1], 8)
    assert ended + cut == len(PROMPTS)
    assert proc.prompt_length == enc["input_ids"].shape[1]


@pytest.mark.parametrize("pattern", [PHONE, JSONISH])
def test_assisted_decoding_matches_plain_greedy(pattern):
    # A draft model proposes several tokens, the main model verifies them:
    # the processor sees rows rewound and advanced by several tokens (and
    # is called by the draft model's generate() in between). Greedy
    # assisted decoding must give exactly the plain greedy output.
    e = env("gpt2")
    torch.manual_seed(99)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=e.model_vocab, n_positions=256)
    draft = GPT2LMHeadModel(cfg).eval()
    for c in (draft.config, draft.generation_config):
        c.eos_token_id = c.pad_token_id = c.bos_token_id = e.eos_id
    for prompt in PROMPTS[:2]:
        proc = e.processor(pattern)
        enc, plain = e.generate(proc, prompts=[prompt], do_sample=False, max_new_tokens=30)
        proc = e.processor(pattern)
        _, assisted = e.generate(proc, prompts=[prompt], do_sample=False, max_new_tokens=30, assistant_model=draft)
        assert torch.equal(assisted, plain), (e.tokenizer.decode(assisted[0]), e.tokenizer.decode(plain[0]))
        ended, _ = check_rows(e, pattern, assisted, enc["input_ids"].shape[1], 30)
        assert ended == 1


@pytest.mark.parametrize("name,do_sample", [("gpt2", False), ("gpt2", True), ("llama3", True)])
def test_cut_off_rows_are_viable_prefixes(name, do_sample):
    e = env(name)
    proc = e.processor(WORDS)
    torch.manual_seed(3)
    kw = dict(num_return_sequences=2) if do_sample else {}
    enc, out = e.generate(proc, do_sample=do_sample, max_new_tokens=8, **kw)
    plen = enc["input_ids"].shape[1]
    ended, cut = check_rows(e, WORDS, out, plen, 8)
    assert cut > 0  # the limit was actually hit
    assert ended + cut == out.shape[0]
    for m, row in zip(proc.matchers, out[:, plen:].tolist()):
        if e.eos_id not in row:
            assert m.num_consumed == 7  # the 8th token is never fed to the processor


def test_wider_embedding_never_samples_padding_columns():
    # phi-3-mini: 32011 tokenizer ids, 32064 embedding rows.
    e = env("phi3", 32064)
    n_tok = len(e.tokenizer)
    assert n_tok == 32011 and e.vocab.size == 32064

    class Tempt(HFLogitsProcessor):
        """Make padding columns and special tokens overwhelmingly likely."""

        def __call__(self, input_ids, scores):
            assert scores.shape[1] == 32064
            scores[:, n_tok:] += 1e4
            scores[:, [0, 1, 32001, 32007]] += 1e4  # <unk>, <s>, <|assistant|>, <|end|>
            return scores

    # UNICODE: byte-fallback tokens may spell Greek byte by byte (<= 50 tokens).
    for pattern, max_new in ((JSONISH, 30), (UNICODE, 52)):
        proc = e.processor(pattern)
        torch.manual_seed(11)
        enc, out = e.generate(proc, extra=[Tempt()], do_sample=True, num_return_sequences=3, max_new_tokens=max_new)
        gen = out[:, enc["input_ids"].shape[1] :]
        assert int(gen.max()) < n_tok
        assert not any(t in (0, 1, 32001, 32007) for t in gen.flatten().tolist())
        ended, _ = check_rows(e, pattern, out, enc["input_ids"].shape[1], max_new)
        assert ended == out.shape[0]


def test_wider_gpt2_embedding_greedy():
    e = env("gpt2", 50304)  # padded to a multiple of 64, as many checkpoints are
    assert e.vocab.size == 50304

    class Tempt(HFLogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, 50257:] += 1e4
            return scores

    proc = e.processor(DATE)
    enc, out = e.generate(proc, extra=[Tempt()], do_sample=False, max_new_tokens=20)
    assert int(out[:, enc["input_ids"].shape[1] :].max()) < 50257
    ended, _ = check_rows(e, DATE, out, enc["input_ids"].shape[1], 20)
    assert ended == len(PROMPTS)


class BiasEos(HFLogitsProcessor):
    """Push even rows to stop as early as allowed and odd rows to go on."""

    def __init__(self, eos_id):
        self.eos_id = eos_id

    def __call__(self, input_ids, scores):
        scores[0::2, self.eos_id] += 100.0
        scores[1::2, self.eos_id] -= 100.0
        return scores


@pytest.mark.parametrize("name", ["gpt2", "llama3"])
def test_rows_finishing_at_different_steps(name):
    # Even rows stop after 2 digits, odd rows run to 12: the finished rows are
    # padded for many steps, and their scores must never be all -inf (NaN).
    e = env(name)
    pattern = r"[0-9]{2,12}"
    proc = e.processor(pattern)
    torch.manual_seed(5)
    enc, out = e.generate(
        proc,
        extra=[BiasEos(e.eos_id)],
        do_sample=True,
        num_return_sequences=2,
        max_new_tokens=20,
        output_scores=True,
        return_dict_in_generate=True,
    )
    res = e.last_result
    plen = enc["input_ids"].shape[1]
    ended, _ = check_rows(e, pattern, out, plen, 20)
    assert ended == out.shape[0]
    gen = out[:, plen:].tolist()
    lengths = [row.index(e.eos_id) for row in gen]
    assert max(lengths) > min(lengths)
    for i, row in enumerate(gen):
        if i % 2 == 0:
            assert 1 <= lengths[i] <= 2  # may end as soon as two digits are there
    assert any(proc.finished) and not all(proc.finished)
    for s in res.scores:
        assert not torch.isnan(torch.softmax(s, dim=-1)).any()


def test_processor_reused_across_generate_calls():
    e = env("gpt2")
    proc = e.processor(PHONE)
    enc1, out1 = e.generate(proc, do_sample=False, max_new_tokens=20)
    steps1 = len(proc.mask_times)
    # Another batch size, another prompt length: a new generation is detected.
    prompts = ["A much longer prompt than any of the ones before it, to change the length", "B"]
    torch.manual_seed(0)
    enc2, out2 = e.generate(proc, prompts=prompts, do_sample=True, num_return_sequences=2, max_new_tokens=20)
    assert len(proc.matchers) == 4
    assert proc.prompt_length == enc2["input_ids"].shape[1]
    assert len(proc.mask_times) == out2.shape[1] - enc2["input_ids"].shape[1]
    check_rows(e, PHONE, out2, enc2["input_ids"].shape[1], 20)
    # The same prompts again (same shapes as call 1) give the same greedy result.
    enc3, out3 = e.generate(proc, do_sample=False, max_new_tokens=20)
    assert torch.equal(out1, out3) and len(proc.mask_times) == steps1


def test_from_regex_builds_vocabulary():
    e = env("gpt2", 50304)
    proc = LogitsProcessor.from_regex(DATE, e.tokenizer, vocab_size=50304)
    assert proc.constraint.vocab_size == 50304
    assert proc.eos_token_ids == [e.eos_id] and proc.pad_token_id == e.pad_id
    enc, out = e.generate(proc, do_sample=False, max_new_tokens=20)
    ended, _ = check_rows(e, DATE, out, enc["input_ids"].shape[1], 20)
    assert ended == len(PROMPTS)
    with pytest.raises(ValueError, match="invalid regex"):
        LogitsProcessor.from_regex("[0-9", e.tokenizer)


# ------------------------------------------------------- direct calls, unit


@pytest.fixture(scope="module")
def small():
    """A tiny hand-made vocabulary: '0'..'9', '-', 'ab', '12', EOS=13, special 14."""
    toks = [str(d).encode() for d in range(10)] + [b"-", b"ab", b"12", None, None]
    vocab = ts.Vocabulary(token_bytes=toks, eos_token_ids=[13])
    return vocab, ts.compile_regex(r"[0-9]{2}-[0-9]", vocab)


def allowed(scores_row):
    return torch.isfinite(scores_row).nonzero().flatten().tolist()


def test_direct_calls_mask_and_consume(small):
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13], pad_token_id=14)
    ids = torch.tensor([[7, 7, 7], [14, 14, 7]])  # second prompt left-padded
    scores = torch.zeros(2, 40)  # wider than the vocabulary (15)
    out = proc(ids, scores)
    assert out is scores
    assert allowed(scores[0]) == allowed(scores[1]) == list(range(10)) + [12]
    assert proc.prompt_length == 3 and len(proc.mask_times) == 1
    ids = torch.cat([ids, torch.tensor([[12], [4]])], dim=1)  # "12" | "4"
    scores = torch.zeros(2, 40)
    proc(ids, scores)
    assert allowed(scores[0]) == [10]  # '-'
    assert allowed(scores[1]) == list(range(10))  # one more digit; '12' would be one too many
    assert [m.num_consumed for m in proc.matchers] == [1, 1]


def test_reordered_rows_follow_their_history(small):
    # What beam search does between steps: rows permuted, one duplicated,
    # one dropped. Each row must get the state of the row it extends.
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13], pad_token_id=14)
    ids = torch.tensor([[7, 1], [7, 2], [7, 3]])
    proc(ids, torch.zeros(3, 15))
    ids = torch.cat([ids, torch.tensor([[12], [4], [5]])], dim=1)  # "12" | "4" | "5"
    proc(ids, torch.zeros(3, 15))
    # Rows now extend old rows 2, 0, 2 (row 1 dropped): "5"+"6", "12"+"-", "5"+"7".
    ids = torch.cat([ids[[2, 0, 2]], torch.tensor([[6], [10], [7]])], dim=1)
    scores = torch.zeros(3, 15)
    proc(ids, scores)
    assert proc.prompt_length == 2, "the generation was restarted"
    assert [m.num_consumed for m in proc.matchers] == [2, 2, 2]
    assert len({id(m) for m in proc.matchers}) == 3, "a duplicated row shares its matcher"
    for r, gen in enumerate([[5, 6], [12, 10], [5, 7]]):
        fresh = ts.Matcher(c)
        assert fresh.consume_tokens(gen) == 2
        want = [t for t in range(15) if fresh.is_allowed(t)]
        assert allowed(scores[r]) == want, f"row {r}"
    # Continue the duplicated rows independently.
    ids = torch.cat([ids, torch.tensor([[10], [3], [10]])], dim=1)
    scores = torch.zeros(3, 15)
    proc(ids, scores)
    assert proc.matchers[0].num_consumed == proc.matchers[2].num_consumed == 3
    assert proc.matchers[1].is_accepting()


def test_rewound_and_advanced_rows_resync(small):
    # What assisted decoding does: the same row rewound to a common prefix,
    # advanced by several tokens at once, and rewound across an EOS.
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13], pad_token_id=14)

    def call(gen):
        scores = torch.zeros(1, 15)
        proc(torch.tensor([[7, 7] + gen]), scores)
        return allowed(scores[0])

    def expect(gen):
        fresh = ts.Matcher(c)
        assert fresh.consume_tokens(gen) == len(gen)
        return [t for t in range(15) if fresh.is_allowed(t)]

    for gen in ([], [1], [1, 2], [1, 5], [1, 5, 10, 3], [1, 5, 10, 3, 13], [1, 5, 10, 4], [2], [2, 3, 10]):
        got = call(gen)
        assert proc.prompt_length == 2, f"restarted at {gen}"
        if gen and gen[-1] == 13:
            assert proc.finished == [True] and set(got) <= {13, 14}
        else:
            assert got == expect(gen), gen
            assert proc.finished == [False]
            assert proc.matchers[0].num_consumed == len(gen)
    # Another prompt, same shape: a new generation, not a resync.
    proc(torch.tensor([[8, 8, 1, 2]]), torch.zeros(1, 15))
    assert proc.prompt_length == 4 and proc.matchers[0].num_consumed == 0


def test_finished_rows_are_padded_not_nan(small):
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13], pad_token_id=14)
    ids = torch.tensor([[5], [5]])
    steps = [[12, 1], [10, 2], [3, 10], [13, 3], [14, 13], [14, 14]]
    proc(ids, torch.zeros(2, 15))
    for k, col in enumerate(steps):
        ids = torch.cat([ids, torch.tensor(col)[:, None]], dim=1)
        scores = torch.zeros(2, 15)
        proc(ids, scores)
        for r in range(2):
            assert torch.isfinite(scores[r]).any(), f"row {r} all -inf after step {k}"
    assert proc.finished == [True, True]
    assert set(allowed(scores[0])) <= {13, 14}
    probs = torch.softmax(scores, dim=-1)
    assert not torch.isnan(probs).any()


def test_disallowed_token_raises(small):
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13], pad_token_id=14)
    ids = torch.tensor([[1, 2]])
    proc(ids, torch.zeros(1, 15))
    with pytest.raises(RuntimeError, match="row 0 generated token 11"):
        proc(torch.cat([ids, torch.tensor([[11]])], dim=1), torch.zeros(1, 15))
    # A token past the vocabulary (an unmasked padding column) is reported the same way.
    proc.reset()
    proc(ids, torch.zeros(1, 40))
    with pytest.raises(RuntimeError, match="token 33"):
        proc(torch.cat([ids, torch.tensor([[33]])], dim=1), torch.zeros(1, 40))


def test_pad_for_unfinished_row_means_stopped_elsewhere(small):
    # e.g. a stop-string criterion ended the row: transformers feeds padding.
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13], pad_token_id=14)
    ids = torch.tensor([[0], [0]])
    proc(ids, torch.zeros(2, 15))
    ids = torch.cat([ids, torch.tensor([[1], [14]])], dim=1)
    scores = torch.zeros(2, 15)
    proc(ids, scores)
    assert proc.finished == [False, True]
    assert allowed(scores[1]) == [13, 14]
    # Without a pad id that is an error.
    proc2 = LogitsProcessor(c)
    proc2(ids[:, :1], torch.zeros(2, 15))
    with pytest.raises(RuntimeError, match="does not allow"):
        proc2(ids, torch.zeros(2, 15))


def test_eos_inferred_without_eos_ids(small):
    vocab, c = small
    proc = LogitsProcessor(c)  # no eos_token_ids: EOS is noticed from the matcher
    ids = torch.tensor([[0]])
    proc(ids, torch.zeros(1, 15))
    for t in [12, 10, 4, 13]:
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
        scores = torch.zeros(1, 15)
        proc(ids, scores)
    assert proc.finished == [True]
    assert allowed(scores[0]) == [13]
    # The padding (here: EOS again) is not consumed.
    ids = torch.cat([ids, torch.tensor([[13]])], dim=1)
    proc(ids, torch.zeros(1, 15))
    assert proc.matchers[0].num_consumed == 4


def test_new_generation_detected_and_reset(small):
    vocab, c = small
    proc = LogitsProcessor(c, eos_token_ids=[13])
    ids = torch.tensor([[0, 0]])
    proc(ids, torch.zeros(1, 15))
    ids = torch.cat([ids, torch.tensor([[1]])], dim=1)
    proc(ids, torch.zeros(1, 15))
    assert proc.matchers[0].num_consumed == 1 and len(proc.mask_times) == 2
    # Same length + 1 but a different previous token: not a continuation.
    other = torch.tensor([[5, 5, 5, 5]])
    proc(other, torch.zeros(1, 15))
    assert proc.prompt_length == 4 and proc.matchers[0].num_consumed == 0
    assert len(proc.mask_times) == 1
    # Shorter input: a new generation.
    proc(torch.tensor([[9]]), torch.zeros(1, 15))
    assert proc.prompt_length == 1
    # Another batch size.
    proc(torch.tensor([[9, 1], [2, 3], [4, 5]]), torch.zeros(3, 15))
    assert len(proc.matchers) == 3
    proc.reset()
    assert proc.matchers == [] and proc.prompt_length is None and proc.mask_times == []


def test_constructor_validation(small):
    vocab, c = small
    with pytest.raises(TypeError, match="tokensieve.Constraint"):
        LogitsProcessor(r"[0-9]+")
    with pytest.raises(ValueError, match="out of range"):
        LogitsProcessor(c, eos_token_ids=[99])
    proc = LogitsProcessor(c)
    assert isinstance(proc, HFLogitsProcessor)
    with pytest.raises(ValueError, match="rows"):
        proc(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 15))


def test_from_grammar_from_json_and_compiled_constraint():
    e = env("gpt2")
    tok = e.tokenizer
    size = np.int64(e.model_vocab)  # any integer type
    for proc, check in [
        (LogitsProcessor.from_grammar('start: ("yes" | "no") "!"', tok, size), lambda t: t in ("yes!", "no!")),
        (LogitsProcessor.from_grammar('root ::= ("yes" | "no") "!"', tok, size, syntax="gbnf"), lambda t: t in ("yes!", "no!")),
        (LogitsProcessor.from_json(tok, size, whitespace="compact", max_depth=2), lambda t: t == "" or t[0] in '{["-0123456789tfn'),
        (LogitsProcessor(ts.compile_regex("(yes|no)!", e.vocab), eos_token_ids=[e.eos_id], pad_token_id=e.pad_id),
         lambda t: t in ("yes!", "no!")),
    ]:
        torch.manual_seed(0)
        enc, out = e.generate(proc, do_sample=True, max_new_tokens=8)
        for row in out[:, enc["input_ids"].shape[1]:]:
            text = e.tokenizer.decode(row, skip_special_tokens=True)
            assert check(text), text


def test_vocab_size_smaller_than_the_tokenizer_is_an_error():
    e = env("gpt2")
    with pytest.raises(ValueError, match="smaller than"):
        LogitsProcessor.from_regex("a", e.tokenizer, vocab_size=100)
    with pytest.raises(TypeError, match="vocab_size"):
        LogitsProcessor.from_regex("a", e.tokenizer, vocab_size=True)


def test_from_json_schema_generates_valid_instances():
    """A random tiny model under a JSON Schema: every finished output is a
    valid instance (checked by jsonschema), every cut-off one a prefix the
    mask allowed."""
    jsonschema = pytest.importorskip("jsonschema")
    e = env("gpt2")
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    proc = LogitsProcessor.from_json_schema(schema, e.tokenizer, e.model_vocab, separators=(", ", ": "))
    torch.manual_seed(0)
    enc, out = e.generate(proc, do_sample=True, max_new_tokens=24)
    finished = 0
    for row in out[:, enc["input_ids"].shape[1]:]:
        text = e.tokenizer.decode(row, skip_special_tokens=True)
        if e.eos_id in row.tolist():
            jsonschema.validate(json.loads(text), schema)
            finished += 1
        else:
            assert text.startswith("{"), text
    with pytest.raises(ValueError, match="uniqueItems"):
        LogitsProcessor.from_json_schema({"uniqueItems": True}, e.tokenizer)
