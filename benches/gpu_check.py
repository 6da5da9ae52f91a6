"""GPU-side costs, run on a CUDA machine (nothing here runs in CI).

1. Bitmask application on CUDA logits (``apply_token_bitmask_inplace`` with
   the packed int32 bitmask on the GPU) against ``masked_fill_`` with a
   ready boolean mask, and the host-to-device copy of the bitmask, at
   |V| = 128,256, float32 and bfloat16, batch 1 to 256; each result checked
   against the reference.
2. Hugging Face ``generate`` on the GPU with the ``LogitsProcessor`` of a
   JSON Schema (masks computed on the CPU while the GPU runs), per-token
   latency with and without the constraint, on a random-weight Llama
   (hidden 2048, 16 layers, Llama 3 vocabulary) in bfloat16.
3. SMC with the KV cache on the GPU (``smc.generate``), N = 16 / 64 / 256,
   per-step wall time, every complete particle checked against the schema.
4. AWRS SMC with a Python potential on the GPU (``awrs``): the tiny GPT-2
   of ``awrs_bench.py e2e`` (GPT-2's tokenizer, shipped in the package) on
   the device with its KV cache there, a Python function ("no letter o")
   times the compiled regex of five words, N = 16 / 64 / 256: ms per
   step, mean potential calls per particle-step, and the posterior's TV
   distance and Z estimate against the exact target (enumerated: every
   tokenization of every word, one forward pass each). Also the same
   target with the Python function alone (AWRS) and with the regex as a
   mask and ``sampler="mask"``.

Usage: ``python benches/gpu_check.py --tokenizer PATH/llama3/tokenizer.json``
(sections 1-3 need the Llama 3 tokenizer; ``--sections awrs`` runs without
one). ``--sections`` picks sections by name: ``bitmask generate smc awrs``
(default: all).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import torch

import tokensieve as ts
from tokensieve import smc
from tokensieve.hf import LogitsProcessor

DEVICE = "cuda"

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def cuda_time_us(fn: Callable[[], Any], iters: int = 200, warm: int = 20) -> float:
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters * 1e3


def bitmask_section(vocab_size: int) -> None:
    from tokensieve import _bitmask

    torch.ones(1, 64, device="cuda").masked_fill_(torch.zeros(1, 64, dtype=torch.bool, device="cuda"), 0)
    probe = torch.zeros(1, 64, device="cuda")
    ts.apply_token_bitmask_inplace(probe, torch.zeros(1, 2, dtype=torch.int32, device="cuda"))
    path = "fused Triton kernel" if "kernel" in _bitmask._TRITON else "torch ops (no Triton)"
    print("## bitmask application on CUDA, |V| = %d (us per call, CUDA events; %s)" % (vocab_size, path))
    print("| dtype | batch | apply_token_bitmask_inplace | same, torch ops only | masked_fill_ (bool mask ready) | bitmask H2D copy |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for dtype in (torch.float32, torch.bfloat16):
        for batch in (1, 16, 64, 256):
            logits = torch.randn(batch, vocab_size, device="cuda", dtype=dtype)
            bm = ts.allocate_token_bitmask(batch, vocab_size)
            bm[:] = rng.integers(-(2**31), 2**31, size=bm.shape, dtype=np.int64).astype(np.int32)
            bm_gpu = torch.from_numpy(bm).cuda()
            bits = np.unpackbits(bm.view(np.uint8), axis=1, bitorder="little")[:, :vocab_size].astype(bool)
            allowed = torch.from_numpy(bits).cuda()
            ref = logits.masked_fill(~allowed, float("-inf"))
            got = logits.clone()
            ts.apply_token_bitmask_inplace(got, bm_gpu)
            if not torch.equal(got, ref):
                raise SystemExit(f"MISMATCH: apply_token_bitmask_inplace, {dtype}, batch {batch}")
            host = torch.from_numpy(bm).pin_memory()
            t_apply = cuda_time_us(lambda: ts.apply_token_bitmask_inplace(logits, bm_gpu))
            saved = dict(_bitmask._TRITON)
            _bitmask._TRITON.clear()
            _bitmask._TRITON["missing"] = True
            got = logits.clone()
            ts.apply_token_bitmask_inplace(got, bm_gpu)
            if not torch.equal(got, logits.masked_fill(~allowed, float("-inf"))):
                raise SystemExit(f"MISMATCH: torch-ops path, {dtype}, batch {batch}")
            t_torch = cuda_time_us(lambda: ts.apply_token_bitmask_inplace(logits, bm_gpu))
            _bitmask._TRITON.clear()
            _bitmask._TRITON.update(saved)
            t_fill = cuda_time_us(lambda: logits.masked_fill_(~allowed, float("-inf")))
            t_copy = cuda_time_us(lambda: bm_gpu.copy_(host, non_blocking=True))
            print(f"| {str(dtype).split('.')[-1]} | {batch} | {t_apply:.1f} | {t_torch:.1f} | {t_fill:.1f} | {t_copy:.1f} |")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def generate_section(tok: Any, small: bool) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

    hidden, layers = (128, 2) if small else (2048, 16)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
        num_attention_heads=16, num_key_value_heads=8, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(DEVICE, torch.bfloat16).eval()
    print(f"\n## HF generate on the GPU, random Llama ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, bf16), 48 new tokens")
    print("| batch | unconstrained ms/token | JSON Schema processor ms/token | compile ms |")
    print("|---|---|---|---|")
    for batch in (1, 8):
        enc = tok(["Person: "] * batch, return_tensors="pt").to(DEVICE)
        kw = dict(max_new_tokens=48, min_new_tokens=48, do_sample=False, pad_token_id=tok.eos_token_id)
        t0 = time.perf_counter()
        proc = LogitsProcessor.from_json_schema(SCHEMA, tok, model.config.vocab_size)
        compile_ms = (time.perf_counter() - t0) * 1e3
        # Warm both paths (kernels, allocator, the constraint's first masks
        # stay cold: a fresh processor is built for the timed run).
        model.generate(**enc, **kw)
        model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tok.eos_token_id,
                       logits_processor=LogitsProcessorList([proc]))
        proc = LogitsProcessor.from_json_schema(SCHEMA, tok, model.config.vocab_size)
        sync()
        t0 = time.perf_counter()
        model.generate(**enc, **kw)
        sync()
        base = (time.perf_counter() - t0) / 48 * 1e3
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=tok.eos_token_id,
                             logits_processor=LogitsProcessorList([proc]))
        sync()
        n = out.shape[1] - enc["input_ids"].shape[1]
        constrained = (time.perf_counter() - t0) / max(n, 1) * 1e3
        for row in out[:, enc["input_ids"].shape[1]:]:
            text = tok.decode(row, skip_special_tokens=True)
            if tok.eos_token_id in row.tolist():
                check(json.loads(text))
        print(f"| {batch} | {base:.2f} | {constrained:.2f} | {compile_ms:.1f} |")


def check(v: Any) -> None:
    ok = (
        isinstance(v, dict)
        and set(v) <= {"name", "age", "tags"}
        and isinstance(v.get("name"), str) and len(v["name"]) <= 20
        and type(v.get("age")) is int and 0 <= v["age"] <= 120
        and all(t in ("a", "b", "c") for t in v.get("tags", []))
    )
    if not ok:
        raise SystemExit(f"INVALID instance: {v!r}")


def smc_section(tok: Any, small: bool) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2 if small else 4, n_head=8, n_embd=64 if small else 512, vocab_size=len(tok), n_positions=256,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).to(DEVICE).eval()
    vocab = ts.Vocabulary.from_huggingface(tok)
    constraint = ts.compile_json_schema(SCHEMA, vocab, separators=(", ", ": "))
    print("\n## SMC with the KV cache on the GPU (random GPT-2 4x512, Llama 3 vocabulary), 40 steps")
    print("| particles | ms / step | ESS resamples | complete | log Z |")
    print("|---|---|---|---|---|")
    for n in (16,) if small else (16, 64, 256):
        smc.generate(model, tok, "Person: ", constraint, n_particles=n, max_new_tokens=4, seed=1)
        sync()
        t0 = time.perf_counter()
        res = smc.generate(model, tok, "Person: ", constraint, n_particles=n, max_new_tokens=40, seed=0)
        sync()
        dt = (time.perf_counter() - t0) / 40 * 1e3
        done = 0
        for text, w in res.posterior(complete_only=True).items():
            check(json.loads(text))
            done += 1
        print(f"| {n} | {dt:.1f} | {getattr(res, 'n_resamples', '-')} | {done} distinct | {res.log_z:.2f} |")


#: The words of section 4 that the Python function lets through (no "o").
AWRS_ALLOWED = (b" cat", b" bird", b" fish")


def no_o(text: bytes) -> bool:
    """Section 4's Python function: the text has no letter "o"."""
    return b"o" not in text


def awrs_section() -> None:
    """AWRS SMC on the device with a Python potential (see the module's
    docstring, section 4); the same sizes with ``--cpu-smoke`` (about 15 s
    on one CPU core). Fails (``SystemExit``) if a complete particle
    with positive weight is outside the target's support, or if the TV
    distance of the posterior pooled over the runs at the largest N is
    above 0.1 (an exact sampler's is ~0.02-0.05 there; masked decoding
    of the same target is ~0.3 away)."""
    import awrs_bench as ab

    from tokensieve.potentials import Potential

    max_tokens = 8  # the longest word (6 bytes) + EOS fits: every particle ends
    model, vocab = ab.tiny_gpt2()
    model = model.to(DEVICE)
    regex = ts.compile_regex(ab.WORDS_REGEX, vocab)

    class NoO(Potential):
        """``no_o`` as a potential; complete texts also weighted by
        ``exp(-0.5 x number of "i")`` (so the final weights matter)."""

        name = "no_o"

        def prefix(self, text: bytes) -> float:
            return 0.0 if no_o(text) else -math.inf

        def complete(self, text: bytes) -> float:
            return -0.5 * text.count(b"i") if no_o(text) else -math.inf

    class WordsNoO(NoO):
        """The same target without the regex: prefixes of the allowed words
        only (a prefix like " d" that no allowed word continues would make
        AWRS evaluate the whole vocabulary at the next step)."""

        name = "words_no_o"

        def prefix(self, text: bytes) -> float:
            return 0.0 if any(w.startswith(text) for w in AWRS_ALLOWED) else -math.inf

        def complete(self, text: bytes) -> float:
            return super().complete(text) if ab.words_complete(text) else -math.inf

    mass = ab.word_masses(model, vocab, ab.WORDS, max_tokens)
    target = {w: m * math.exp(NoO().complete(w)) for w, m in mass.items() if no_o(w)}
    z_exact = sum(target.values())
    exact = {w: m / z_exact for w, m in target.items()}
    modes: Dict[str, Dict[str, Any]] = {
        "awrs, regex x Python": dict(potentials=[regex, NoO()], sampler="awrs"),
        "awrs, Python only": dict(potentials=[WordsNoO()], sampler="awrs"),
        "mask, regex x Python": dict(potentials=[regex, NoO()], sampler="mask"),
    }
    particles: Sequence[int] = (16, 64, 256)
    runs = 8
    dev = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu"
    print(f"\n## AWRS SMC with a Python potential on {dev} (tiny GPT-2 2x64, |V| = 50,257, KV cache on the device), "
          f"max {max_tokens} tokens, {runs} seeded runs per cell")
    print(f"regex {ab.WORDS_REGEX!r} x Python 'no o' (complete: exp(-0.5 x #i)); exact target "
          + ", ".join(f"{w.decode()!r} {p:.4f}" for w, p in exact.items()) + f"; Z = {z_exact:.4g}")
    print("| N | mode | ms / step (median) | potential calls / particle-step | TV pooled | TV per run (mean) | "
          "Z-hat mean ± SE | (Z-hat - Z) / SE |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    worst: Dict[str, float] = {}
    for n in particles:
        for label, kw in modes.items():
            smc.generate(model, None, [50256], n_particles=n, max_new_tokens=max_tokens, seed=10_000, vocab=vocab, **kw)
            per: List[float] = []
            tvs: List[float] = []
            zs: List[float] = []
            calls: List[float] = []
            pooled: Dict[bytes, float] = {}
            for r in range(runs):
                sync()
                t0 = time.perf_counter()
                res = smc.generate(model, None, [50256], n_particles=n, max_new_tokens=max_tokens, seed=r,
                                   vocab=vocab, **kw)
                sync()
                per.append((time.perf_counter() - t0) / max(res.num_steps, 1))
                post = res.posterior(complete_only=True, as_bytes=True)
                bad = [t for t in post if t not in exact]
                if bad:
                    raise SystemExit(f"INVALID: {label}, N = {n}: {bad!r} outside the target's support")
                tvs.append(ab.tv(post, exact))
                zs.append(res.z)
                calls.append(res.calls_per_step())
                for k, v in post.items():
                    pooled[k] = pooled.get(k, 0.0) + v / runs
            se = statistics.stdev(zs) / math.sqrt(runs)
            tv_pooled = ab.tv(pooled, exact)
            worst[label] = tv_pooled
            print(f"| {n} | {label} | {statistics.median(per) * 1e3:.1f} | {statistics.mean(calls):.2f} | "
                  f"{tv_pooled:.3f} | {statistics.mean(tvs):.3f} | {statistics.mean(zs):.4g} ± {se:.2g} | "
                  f"{(statistics.mean(zs) - z_exact) / se if se > 0 else 0.0:+.1f} |", flush=True)
    for label, t in worst.items():
        if t > 0.1:
            raise SystemExit(f"TV {t:.3f} > 0.1 at N = {particles[-1]} ({label}): not the exact target")


SECTIONS = ("bitmask", "generate", "smc", "awrs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="a Llama 3 tokenizer.json (sections bitmask, generate, smc)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU, to check the script itself")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="which sections to run (default: all)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = "cpu" if args.cpu_smoke else "cuda"
    needs_tok = set(args.sections) - {"awrs"}
    if needs_tok and not args.tokenizer:
        ap.error(f"--tokenizer is needed for the sections {sorted(needs_tok)}")
    print(f"device: {torch.cuda.get_device_name(0) if DEVICE == 'cuda' else 'cpu'}, torch {torch.__version__}")
    t_all = time.perf_counter()
    if needs_tok:
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer, bos_token="<|begin_of_text|>",
                                      eos_token="<|end_of_text|>")
    if "bitmask" in args.sections and DEVICE == "cuda":
        bitmask_section(len(tok))
    if "generate" in args.sections:
        generate_section(tok, args.cpu_smoke)
    if "smc" in args.sections:
        smc_section(tok, args.cpu_smoke)
    if "awrs" in args.sections:
        awrs_section()
    print(f"\nall checks passed ({time.perf_counter() - t_all:.0f} s)")


if __name__ == "__main__":
    main()
