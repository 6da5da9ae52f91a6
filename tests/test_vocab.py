"""Vocabulary: token bytes, special tokens, EOS detection, padding, loaders.

The central property: for every real tokenizer whose encoding is lossless,
encoding a string with the reference implementation (`tokenizers`) and
concatenating ``vocab.token_bytes(id)`` of the ids gives back the string's
UTF-8 bytes. That is what makes masks computed over token bytes mean what
they say.
"""

from __future__ import annotations

import functools
import json
import random
import unicodedata

import numpy as np
import pytest

import tokensieve as ts
from conftest import SHARED_TOKENIZERS, load_tokenizer_json, load_vocab, tokenizer_path

tokenizers = pytest.importorskip("tokenizers")

# t5-small (SentencePiece Unigram, no byte fallback) maps emoji/CJK/braces to
# <unk> and collapses whitespace: no round trip is possible, by design.
LOSSLESS = tuple(name for name in SHARED_TOKENIZERS if name != "t5-small")

STRINGS_PER_TOKENIZER = 2500


@functools.lru_cache(maxsize=None)
def hf_tokenizer(name: str):
    """The reference implementation (`tokenizers`) of a shared tokenizer."""
    return tokenizers.Tokenizer.from_str(load_tokenizer_json(name))


# ---------------------------------------------------------------------------
# Random strings: unicode, emoji, whitespace runs, code.
# ---------------------------------------------------------------------------

_WORDS = [
    "the", "quick", "brown", "fox", "Hello", "world", "tokenizer", "JSON", "don't", "it's",
    "I'll", "WE'RE", "x", "a", "İstanbul", "naïve", "café", "Übermaß", "façade", "smörgåsbord",
    "Ελληνικά", "Привет", "мир", "שלום", "مرحبا", "नमस्ते", "สวัสดี", "日本語", "テキスト",
    "ひらがな", "中文字符", "한국어", "Tiếng Việt", "ǅemal", "ﬁne", "Ⅻ", "①②", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "snake\u2581case",  # a literal U+2581: SentencePiece models read it as a space
]
_EMOJI = [
    "🦊", "🎉", "👩\u200d💻", "👍🏽", "🇫🇷", "1\ufe0f\u20e3", "❤\ufe0f", "👨\u200d👩\u200d👧\u200d👦",
    "🏳\ufe0f\u200d🌈", "😀😃😄", "🤖", "🧪", "∑", "→", "✓", "©", "™",
]
_WHITESPACE = [" ", "  ", "   ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n", "\n ",
               " \t \n", "\u00a0", "\u3000", "\u2009", "\u200b", "\x0b", "\x0c"]
_CODE = [
    "def f(x):\n    return x ** 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    '{"json": [1, 2.5e-3, null, true], "k": {"n": -0}}',
    "<div class=\"row\">&nbsp;</div>",
    "SELECT id, name FROM users WHERE age >= 18;",
    "fn main() { println!(\"{:?}\", vec![1, 2]); }",
    "x = [i for i in range(10) if i % 2 == 0]  # comment",
    "#include <stdio.h>\nint main(void) { return 0; }",
    "$ ls -la | grep '^d' && echo \"ok\"",
    "^[a-z0-9_.+-]+@[a-z0-9-]+\\.[a-z]+$",
    "    if a != b:\n        raise ValueError('bad')\n",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f^=6;g|=7;h&=8",
    "https://example.com/path?q=1&r=%20#frag",
    "@decorator\nclass A(B, metaclass=M):\n    pass",
    "`code` **bold** _it_ ~~strike~~ [link](http://x.y)",
]
_NUMBERS_FMT = ["{}", "{:,}", "{:.3f}", "{:e}", "0x{:x}", "{:08d}"]

# Decomposed sequences: NFC changes them (qwen3 normalises to NFC).
_DECOMPOSED = ["e\u0301", "A\u030a", "n\u0303", "\u1100\u1161", "o\u0308\u0304"]


def _random_codepoint(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.15:
        return chr(rng.randrange(0x00, 0x20))  # C0 controls, incl. \0
    if r < 0.45:
        return chr(rng.randrange(0x80, 0x800))  # 2-byte UTF-8
    if r < 0.85:
        while True:
            c = rng.randrange(0x800, 0x10000)  # 3-byte UTF-8, no surrogates
            if not 0xD800 <= c <= 0xDFFF:
                return chr(c)
    return chr(rng.randrange(0x10000, 0x110000))  # 4-byte UTF-8


def _fragment(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.22:
        w = rng.choice(_WORDS)
        return w.upper() if rng.random() < 0.1 else w
    if k < 0.30:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 12)))
    if k < 0.45:
        return rng.choice(_WHITESPACE) * rng.randint(1, 3)
    if k < 0.55:
        return rng.choice(_EMOJI)
    if k < 0.65:
        return rng.choice(_CODE)
    if k < 0.72:
        n = rng.choice([rng.randint(0, 9), rng.randint(0, 10**6), rng.randint(-(10**12), 10**12)])
        f = rng.choice(_NUMBERS_FMT)
        try:
            return f.format(n if "x" not in f else abs(n))
        except ValueError:
            return str(n)
    if k < 0.80:
        return "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randint(1, 4)))
    if k < 0.85:
        return rng.choice(_DECOMPOSED)
    return "".join(_random_codepoint(rng) for _ in range(rng.randint(1, 4)))


def random_strings(seed: int, n: int) -> list[str]:
    """``n`` reproducible, non-empty random strings (1 to ~20 fragments)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        s = "".join(_fragment(rng) for _ in range(rng.choice([1, 1, 2, 3, 5, 8, 13, 20])))
        if s:
            out.append(s)
    return out


# ---------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------


def _special_contents(tok_json: str) -> list[str]:
    return [a["content"] for a in json.loads(tok_json).get("added_tokens", []) if a.get("special")]


def _expected_bytes(s: str, vocab: ts.Vocabulary, nfc: bool) -> bytes:
    """What the tokens of ``encode(s)`` must spell, given the normalizer.

    * qwen3 normalises its input to NFC, so its tokens spell NFC(s).
    * SentencePiece models (Mistral, Phi-3, Gemma) replace every space with
      U+2581 `▁` before tokenising and spell spaces as `▁` in their pieces,
      so a literal `▁` in the input is indistinguishable from a space (the
      HF decoder turns both into " " too). Those with a ``Prepend``/
      ``Metaspace`` prefix also add one leading space.
    """
    if nfc:
        s = unicodedata.normalize("NFC", s)
    if vocab.spelling == "sentencepiece":
        s = s.replace("\u2581", " ")
        if vocab.adds_prefix_space:
            s = " " + s
    return s.encode("utf-8")


@pytest.mark.parametrize("name", LOSSLESS)
def test_round_trip_random_strings(name):
    vocab = load_vocab(name)
    tok_json = load_tokenizer_json(name)
    tk = hf_tokenizer(name)
    nfc = '"NFC"' in json.dumps(json.loads(tok_json).get("normalizer"))
    assert nfc == (name == "qwen3")
    specials = _special_contents(tok_json)
    # A special token's text inside the input would be matched as that
    # special token (which spells nothing): keep such strings out.
    strings = [s for s in random_strings(1234, STRINGS_PER_TOKENIZER + 100) if not any(sp in s for sp in specials)]
    strings = strings[:STRINGS_PER_TOKENIZER]
    assert len(strings) == STRINGS_PER_TOKENIZER
    # The generator really covers what it should.
    joined = "".join(strings)
    assert "🦊" in joined and "\t" in joined and "   " in joined and "def f(x)" in joined and "日本語" in joined

    token_bytes = [vocab.token_bytes(i) for i in range(vocab.size)]
    encodings = tk.encode_batch(strings, add_special_tokens=False)
    failures = []
    n_tokens = 0
    for s, enc in zip(strings, encodings):
        ids = enc.ids
        n_tokens += len(ids)
        got = b"".join(token_bytes[i] for i in ids)
        want = _expected_bytes(s, vocab, nfc)
        if got != want:
            failures.append((s, ids, got, want))
    if failures:
        lines = []
        for s, ids, got, want in failures[:5]:
            pieces = [tk.id_to_token(i) for i in ids]
            bad = [(i, tk.id_to_token(i), token_bytes[i]) for i in ids]
            lines.append(f"input={s!r}\n  ids={ids}\n  pieces={pieces}\n  expected={want!r}\n  actual  ={got!r}\n  per-token={bad}")
        pytest.fail(f"{name}: {len(failures)}/{len(strings)} strings do not round-trip:\n" + "\n".join(lines))
    assert n_tokens > 10 * len(strings)  # the strings were not trivially short


@pytest.mark.parametrize("name", LOSSLESS)
def test_readme_string_round_trips(name):
    # The string the shared README says every lossless tokenizer decodes exactly.
    s = ("Hello, world! The quick brown fox 🦊 jumps.\nÜnïcödé: 日本語テキスト, Ελληνικά, emoji 👩\u200d💻🎉\n\n\t"
         "indented  two  spaces {\"json\": [1, 2.5e-3]}")
    vocab = load_vocab(name)
    tk = hf_tokenizer(name)
    ids = tk.encode(s, add_special_tokens=False).ids
    got = b"".join(vocab.token_bytes(i) for i in ids)
    assert got == _expected_bytes(s, vocab, nfc=(name == "qwen3"))


def test_t5_small_is_lossy_but_loads():
    vocab = load_vocab("t5-small")
    assert vocab.size == 32100
    assert vocab.spelling == "sentencepiece" and vocab.adds_prefix_space
    assert vocab.token_bytes(8) == b" the"  # ▁the
    assert vocab.is_special(1) and vocab.token_bytes(1) == b""  # </s>
    assert vocab.eos_token_ids == [1]
    assert vocab.is_special(32099)  # <extra_id_0>


# ---------------------------------------------------------------------------
# Marker tokens (ids from the shared README), spelling, prefix space
# ---------------------------------------------------------------------------

MARKERS = {
    "gpt2": {262: b" the"},
    "llama-3-8b-instruct": {279: b" the"},
    "qwen3": {279: b" the"},
    "mistral-7b-v0.1": {13: b"\n", 272: b" the", 22557: b" Hello"},  # "Hello" encodes to [1, 22557] (▁Hello)
    "phi-3-mini": {13: b"\n", 278: b" the"},
    "gemma-3": {248: b"\n", 506: b" the"},
    "deepseek-v3": {270: b" the"},
}
SPECIAL_MARKERS = {
    "gpt2": [50256],
    "llama-3-8b-instruct": [128000, 128009, 128255],
    "qwen3": [151643, 151644],
    "mistral-7b-v0.1": [1, 2],
    "phi-3-mini": [32001, 32007],
    "gemma-3": [105],
    "deepseek-v3": [0],
}
SPELLING = {
    "gpt2": ("byte_level", False),
    "llama-3-8b-instruct": ("byte_level", False),
    "qwen3": ("byte_level", False),
    "deepseek-v3": ("byte_level", False),
    "mistral-7b-v0.1": ("sentencepiece", True),
    "phi-3-mini": ("sentencepiece", True),
    "gemma-3": ("sentencepiece", False),  # Replace ' '->'▁' but no Prepend
}


@pytest.mark.parametrize("name", LOSSLESS)
def test_marker_tokens_and_spelling(name):
    vocab = load_vocab(name)
    for i, b in MARKERS[name].items():
        assert vocab.token_bytes(i) == b, (name, i)
        assert not vocab.is_special(i)
    for i in SPECIAL_MARKERS[name]:
        assert vocab.is_special(i) and vocab.token_bytes(i) == b"", (name, i)
    assert (vocab.spelling, vocab.adds_prefix_space) == SPELLING[name]
    assert len(vocab) == vocab.size


@pytest.mark.parametrize("name", ["mistral-7b-v0.1", "phi-3-mini", "gemma-3"])
def test_byte_fallback_tokens_are_single_bytes(name):
    vocab = load_vocab(name)
    tk = hf_tokenizer(name)
    for b in range(256):
        i = tk.token_to_id(f"<0x{b:02X}>")
        assert i is not None
        assert vocab.token_bytes(i) == bytes([b])


def test_byte_level_alphabet_covers_all_bytes():
    # GPT-2's first 256 ids are the byte alphabet, each exactly one byte.
    vocab = load_vocab("gpt2")
    got = sorted(vocab.token_bytes(i) for i in range(256))
    assert got == [bytes([b]) for b in range(256)]


# ---------------------------------------------------------------------------
# Special tokens
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOSSLESS + ("t5-small",))
def test_special_tokens_spell_nothing(name):
    vocab = load_vocab(name)
    tok = json.loads(load_tokenizer_json(name))
    added = tok.get("added_tokens", [])
    special_ids = {a["id"] for a in added if a.get("special")}
    assert special_ids
    for i in special_ids:
        assert vocab.is_special(i), (name, i)
        assert vocab.token_bytes(i) == b"", (name, i)
    # Every other id has bytes and is not special (ordinary vocabulary and
    # non-special added tokens such as qwen3's <think>).
    flags = np.array([vocab.is_special(i) for i in range(vocab.size)])
    empties = np.array([vocab.token_bytes(i) == b"" for i in range(vocab.size)])
    assert (flags == empties).all()
    assert set(np.flatnonzero(flags).tolist()) == special_ids
    # A non-special added token that is not a piece of the model inserts its
    # content literally (qwen3's <tool_call>, deepseek's <｜User｜>); one that is
    # also a piece (gemma's "▁▁") keeps the piece's spelling (b"  ").
    model_vocab = tok["model"]["vocab"]
    pieces = set(model_vocab) if isinstance(model_vocab, dict) else {p for p, _ in model_vocab}
    for a in added:
        if not a.get("special") and a["content"] not in pieces:
            assert vocab.token_bytes(a["id"]) == a["content"].encode(), (name, a)


@pytest.mark.parametrize("name", ["gpt2", "llama-3-8b-instruct", "mistral-7b-v0.1"])
def test_special_tokens_never_allowed(name):
    vocab = load_vocab(name)
    c = ts.compile_regex(r"(?s:.*)", vocab)
    m = ts.Matcher(c)
    allowed = set(m.allowed_tokens())
    for i in range(vocab.size):
        if vocab.is_special(i):
            assert (i in allowed) == (i in vocab.eos_token_ids), i
            if i not in vocab.eos_token_ids:
                assert not m.is_allowed(i) and not m.consume_token(i)


# ---------------------------------------------------------------------------
# EOS detection
# ---------------------------------------------------------------------------


def _config_eos_id(name: str) -> int:
    cfg = json.loads((tokenizer_path(name).parent / "tokenizer_config.json").read_text(encoding="utf-8"))
    eos = cfg["eos_token"]
    eos = eos["content"] if isinstance(eos, dict) else eos
    tk = hf_tokenizer(name)
    i = tk.token_to_id(eos)
    assert i is not None
    return i


def test_eos_gpt2():
    assert load_vocab("gpt2").eos_token_ids == [50256]


def test_eos_llama3_from_config():
    eos = load_vocab("llama-3-8b-instruct").eos_token_ids
    assert 128009 in eos  # <|eot_id|>, from tokenizer_config.json
    assert _config_eos_id("llama-3-8b-instruct") == 128009
    assert all(load_vocab("llama-3-8b-instruct").is_special(e) for e in eos)


def test_eos_mistral():
    assert load_vocab("mistral-7b-v0.1").eos_token_ids == [2]


def test_eos_qwen3_from_config():
    eos = load_vocab("qwen3").eos_token_ids
    want = _config_eos_id("qwen3")
    assert want in (151645, 151643)
    assert want in eos


@pytest.mark.parametrize("name", ["phi-3-mini", "gemma-3", "deepseek-v3"])
def test_eos_other_families_follow_config(name):
    assert _config_eos_id(name) in load_vocab(name).eos_token_ids


def test_eos_without_config_uses_known_names():
    # Raw JSON, no tokenizer_config.json: well-known end-of-text names.
    assert ts.Vocabulary(load_tokenizer_json("gpt2")).eos_token_ids == [50256]
    assert ts.Vocabulary(load_tokenizer_json("mistral-7b-v0.1")).eos_token_ids == [2]
    assert 128009 in ts.Vocabulary(load_tokenizer_json("llama-3-8b-instruct")).eos_token_ids


def test_eos_override():
    v = ts.Vocabulary.from_tokenizer_file(tokenizer_path("gpt2"), eos_token_ids=[50256, 198])
    assert v.eos_token_ids == [50256, 198]
    c = ts.compile_regex("a+", v)
    m = ts.Matcher(c)
    assert not m.is_allowed(198)  # EOS, not accepting yet: not allowed though its bytes would be
    assert m.consume_token(64)  # "a"
    assert m.is_allowed(198) and m.is_allowed(50256)
    assert m.consume_token(198)
    assert m.allowed_tokens() == [198, 50256]  # after EOS only EOS


# ---------------------------------------------------------------------------
# vocab_size padding
# ---------------------------------------------------------------------------


def test_vocab_size_padding_phi3():
    v = load_vocab("phi-3-mini", vocab_size=32064)
    base = load_vocab("phi-3-mini")
    assert base.size == 32011
    assert v.size == 32064 and len(v) == 32064
    for i in range(32011, 32064):
        assert v.is_special(i) and v.token_bytes(i) == b""
    for i in range(32011):
        assert v.token_bytes(i) == base.token_bytes(i)
        assert v.is_special(i) == base.is_special(i)
    assert v.eos_token_ids == base.eos_token_ids
    with pytest.raises(ValueError):
        v.token_bytes(32064)
    # Masks are as wide as the padded vocabulary and never allow padding ids.
    c = ts.compile_regex(r"(?s:.*)", v)
    assert c.vocab_size == 32064
    bm = ts.allocate_token_bitmask(1, v.size)
    assert bm.shape == (1, 1002)
    ts.Matcher(c).fill_next_token_bitmask(bm)
    bits = np.unpackbits(bm.view(np.uint8), bitorder="little")
    assert bits[32011:].sum() == 0
    bm0 = ts.allocate_token_bitmask(1, base.size)
    ts.Matcher(ts.compile_regex(r"(?s:.*)", base)).fill_next_token_bitmask(bm0)
    bits0 = np.unpackbits(bm0.view(np.uint8), bitorder="little")[: base.size]
    assert (bits[:32011] == bits0).all()
    # Everything but specials and lone bytes that cannot start UTF-8
    # (<0x80>..<0xC1>, <0xF5>..<0xFF>), plus EOS (.* accepts the empty text).
    def ok(i):
        b = base.token_bytes(i)
        return not base.is_special(i) and not (len(b) == 1 and (0x80 <= b[0] <= 0xC1 or b[0] >= 0xF5))
    assert bits0.sum() == sum(1 for i in range(32011) if ok(i)) + 1
    assert bits0[32000] == 1  # EOS <|endoftext|>


# ---------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "llama-3-8b-instruct", "mistral-7b-v0.1", "qwen3"])
def test_from_huggingface_matches_file(name):
    transformers = pytest.importorskip("transformers")
    path = tokenizer_path(name)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    a = ts.Vocabulary.from_huggingface(hf)
    b = load_vocab(name)
    assert a.size == b.size
    assert a.spelling == b.spelling and a.adds_prefix_space == b.adds_prefix_space
    for i in range(a.size):
        if a.token_bytes(i) != b.token_bytes(i) or a.is_special(i) != b.is_special(i):
            pytest.fail(f"{name}: id {i}: from_huggingface {a.token_bytes(i)!r} vs file {b.token_bytes(i)!r}")


def test_from_huggingface_eos_and_vocab_size():
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path("gpt2")), eos_token="<|endoftext|>")
    v = ts.Vocabulary.from_huggingface(hf, vocab_size=50304)
    assert v.eos_token_ids == [50256]
    assert v.size == 50304 and v.is_special(50303)
    assert ts.Vocabulary.from_huggingface(hf, eos_token_ids=[0]).eos_token_ids == [0]


def test_from_huggingface_rejects_slow_tokenizer():
    class NotFast:
        eos_token_id = 0

    with pytest.raises(TypeError, match="^tokenizer must be"):
        ts.Vocabulary.from_huggingface(NotFast())


def test_from_huggingface_takes_a_tokenizers_tokenizer():
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_path("gpt2")))
    v = ts.Vocabulary.from_huggingface(tok)
    w = load_vocab("gpt2")
    assert v.eos_token_ids == w.eos_token_ids == [50256]  # <|endoftext|>, a well-known EOS name
    assert v.size == w.size and all(v.token_bytes(i) == w.token_bytes(i) for i in range(0, v.size, 97))
    assert ts.Vocabulary.from_huggingface(tok, eos_token_ids=[13], vocab_size=50304).eos_token_ids == [13]


def test_gemma3_json_gz_loads():
    path = tokenizer_path("gemma-3")
    assert path.name == "tokenizer.json.gz"
    v = ts.Vocabulary.from_tokenizer_file(str(path))  # the .gz file itself
    w = load_vocab("gemma-3")  # its directory
    for x in (v, w):
        assert x.size == 262145 and x.spelling == "sentencepiece"
        assert x.token_bytes(506) == b" the"
        assert x.token_bytes(248) == b"\n"  # <0x0A>
        assert x.is_special(105)  # <start_of_turn>
        assert x.eos_token_ids == [106]  # <end_of_turn>, from tokenizer_config.json
    assert all(w.token_bytes(i) == v.token_bytes(i) for i in range(0, v.size, 7))


def test_explicit_token_bytes():
    v = ts.Vocabulary(token_bytes=[b"a", b"b", None, b"\xe6\x97", b"\xa5"], eos_token_ids=[2], vocab_size=40)
    assert v.size == 40 and v.spelling == "plain" and not v.adds_prefix_space
    assert v.token_bytes(3) == b"\xe6\x97" and v.token_bytes(2) == b""
    assert v.is_special(2) and v.is_special(39) and not v.is_special(0)
    m = ts.Matcher(ts.compile_regex("日", v))
    assert m.allowed_tokens() == [3]
    assert m.consume_token(3)
    assert m.allowed_tokens() == [4]
    assert m.consume_token(4) and m.allowed_tokens() == [2]
