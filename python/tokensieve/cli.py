"""Command line interface: ``tokensieve generate`` and ``tokensieve demo``.

``tokensieve generate`` runs a local Hugging Face model under a constraint;
``tokensieve demo`` shows the idea offline in a few seconds, with the shipped
GPT-2 tokenizer and a tiny random-weight model.

The parser is organised in argument groups (constraint, model, decoding) so
that further constraint kinds (``--grammar FILE``, ``--json SCHEMA``) and
decoders (``--smc N``) slot into the existing groups; see
:func:`_build_constraint`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import __version__

#: (name, pattern) pairs shown by ``tokensieve demo``. Each pattern is bounded
#: (it always completes within the demo's token budget) and means the same in
#: Python's ``re`` and in tokensieve's Rust regex syntax.
DEMO_PATTERNS: List[Tuple[str, str]] = [
    # Only real dates: 30-day months stop at 30, February at 28 (a regex
    # cannot tell leap years apart, so 29 February is left out).
    ("ISO date", r"(19|20)[0-9]{2}-(02-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(0[1-9]|[12][0-9]|30)|(0[13578]|1[02])-31)"),
    ("e-mail address", r"[a-z][a-z0-9]{2,9}(\.[a-z]{2,8})?@[a-z]{3,10}\.(com|org|net|io)"),
    ("US phone number", r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"),
    ("24-hour time", r"([01][0-9]|2[0-3]):[0-5][0-9]"),
    ("small JSON object", r'\{"name": "[A-Z][a-z]{2,9}", "age": [1-9][0-9]?\}'),
]

DEMO_PROMPT = "Here is an example:"
DEMO_MAX_NEW_TOKENS = 48
#: Prefix of every result line of the demo (tests parse it).
RESULT_PREFIX = "  -> "


class CLIError(Exception):
    """A user-facing error: printed as one line on stderr, exit status 2."""


# ---------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    """The ``tokensieve`` argument parser (sub-commands ``generate`` and ``demo``)."""
    parser = argparse.ArgumentParser(
        prog="tokensieve",
        description="Exact token masks for constrained generation with language models.",
    )
    parser.add_argument("--version", action="version", version=f"tokensieve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="generate text from a local Hugging Face model under a constraint",
        description=(
            "Generate text from a local Hugging Face model (a directory written by "
            "save_pretrained, or a model already in the local cache; nothing is downloaded) "
            "such that every output matches the constraint in full."
        ),
    )
    cons = gen.add_argument_group("constraint (exactly one)")
    kinds = cons.add_mutually_exclusive_group(required=True)
    kinds.add_argument(
        "--regex",
        metavar="PATTERN",
        help="regular expression (Rust regex syntax) the whole output must match",
    )
    kinds.add_argument(
        "--grammar",
        metavar="FILE",
        help="context-free grammar file: Lark syntax (.lark, start rule 'start') or GBNF (.gbnf, start rule 'root')",
    )
    kinds.add_argument("--json", action="store_true", help="any JSON value (built-in grammar)")
    kinds.add_argument(
        "--json-schema",
        metavar="FILE",
        help="JSON Schema file (draft 2020-12): the output is one instance of it, written as json.dumps does",
    )
    cons.add_argument(
        "--grammar-syntax",
        choices=("lark", "gbnf"),
        default=None,
        help="syntax of --grammar (default: from the file extension, else lark)",
    )

    model = gen.add_argument_group("model")
    model.add_argument("--model", required=True, metavar="NAME_OR_PATH", help="local model directory or cached model name")
    model.add_argument("--prompt", default="", metavar="TEXT", help="prompt text (default: empty)")

    dec = gen.add_argument_group("decoding")
    dec.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N", help="token budget (default: 64)")
    dec.add_argument("--num-samples", type=_positive_int, default=1, metavar="K", help="outputs to generate (default: 1)")
    dec.add_argument("--seed", type=int, default=0, metavar="S", help="random seed for sampling (default: 0)")
    mode = dec.add_mutually_exclusive_group()
    mode.add_argument("--sample", dest="sample", action="store_true", default=None, help="sample (default when K > 1)")
    mode.add_argument("--greedy", dest="sample", action="store_false", help="greedy decoding (default when K = 1)")
    dec.add_argument(
        "--smc",
        type=_positive_int,
        default=None,
        metavar="N",
        help="sequential Monte Carlo with N particles: samples the model conditioned on the constraint "
        "and prints the weighted posterior over strings and the estimate of log P(constraint)",
    )
    dec.add_argument(
        "--potential",
        action="append",
        default=None,
        metavar="MODULE:FUNCTION",
        help="with --smc: a Python constraint, FUNCTION(text: bytes) -> bool or log weight (or a "
        "tokensieve.potentials.Potential), from an importable MODULE or a FILE.py; asked only about "
        "tokens the constraint above allows; repeatable",
    )
    dec.add_argument(
        "--sampler",
        default="awrs",
        choices=("awrs", "rejection", "direct", "mask"),
        help="with --potential: how SMC proposes tokens under the Python constraints (default: awrs)",
    )
    gen.add_argument("-v", "--verbose", action="store_true", help="print timings and library warnings on stderr")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser(
        "demo",
        help="offline demo: a tiny random GPT-2 writing dates, e-mails, phone numbers",
        description=(
            "Offline demo: builds a tiny GPT-2 with random weights, loads the real GPT-2 "
            "tokenizer shipped with tokensieve, and generates strings for a few regexes."
        ),
    )
    demo.add_argument("--seed", type=int, default=0, metavar="S", help="seed for weights and sampling (default: 0)")
    demo.add_argument("--num-samples", type=_positive_int, default=3, metavar="K", help="strings per pattern (default: 3)")
    demo.set_defaults(func=cmd_demo)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0: success; 1: an output failed its own check (a bug); 2: usage error,
    invalid constraint, or a model that cannot be loaded (one line on stderr).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except CLIError as e:
        print(f"tokensieve: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokensieve: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- helpers


def _import_hf() -> Tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise CLIError(f"this command needs torch and transformers ({e}); pip install 'tokensieve[hf]'") from None
    return torch, transformers


@contextlib.contextmanager
def _quiet_transformers(transformers: Any, quiet: bool = True) -> Iterator[None]:
    """Silence transformers' warnings for the duration (restoring the old level)."""
    tlog = transformers.logging
    level = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    if quiet:
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def _first_line(e: BaseException, limit: int = 300) -> str:
    """The message of ``e`` squeezed into one line of at most ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build_constraint(args: argparse.Namespace, vocab: Any) -> Any:
    """Compile the constraint chosen on the command line against ``vocab``."""
    import tokensieve as ts

    if args.regex is not None:
        try:
            return ts.compile_regex(args.regex, vocab)
        except ValueError as e:
            raise CLIError(f"--regex {args.regex!r}: {e}") from None
    if getattr(args, "grammar", None) is not None:
        path = Path(args.grammar)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CLIError(f"--grammar {args.grammar!r}: cannot read it ({e.strerror or e})") from None
        syntax = args.grammar_syntax or ("gbnf" if path.suffix.lower() == ".gbnf" else "lark")
        try:
            return ts.compile_grammar(text, vocab, syntax=syntax)
        except ValueError as e:
            raise CLIError(f"--grammar {args.grammar!r}: {e}") from None
    if getattr(args, "json_schema", None) is not None:
        try:
            text = Path(args.json_schema).read_text(encoding="utf-8")
        except OSError as e:
            raise CLIError(f"--json-schema {args.json_schema!r}: cannot read it ({e.strerror or e})") from None
        try:
            return ts.compile_json_schema(text, vocab, separators=(", ", ": "))
        except ValueError as e:
            raise CLIError(f"--json-schema {args.json_schema!r}: {e}") from None
    if getattr(args, "json", False):
        return ts.compile_json(vocab, whitespace="compact")  # no stray whitespace in the output
    raise CLIError("no constraint given")  # pragma: no cover - argparse requires one


def _load_potential(spec: str) -> Any:
    """``--potential MODULE:FUNCTION`` (or ``FILE.py:FUNCTION``): the object,
    as a :class:`tokensieve.potentials.Potential`."""
    import importlib
    import importlib.util

    from .potentials import Potential, potential

    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise CLIError(f"--potential {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION")
    try:
        if mod_name.endswith(".py"):
            loc = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            if loc is None or loc.loader is None:
                raise ImportError(f"cannot load {mod_name}")
            module = importlib.util.module_from_spec(loc)
            loc.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(mod_name)
    except Exception as e:
        raise CLIError(f"--potential {spec!r}: cannot import {mod_name!r} ({_first_line(e)})") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise CLIError(f"--potential {spec!r}: {mod_name!r} has no attribute {attr!r}")
    if isinstance(obj, type) and issubclass(obj, Potential):
        obj = obj()
    if isinstance(obj, Potential):
        return obj
    if callable(obj):
        return potential(obj)
    raise CLIError(f"--potential {spec!r}: {attr!r} is a {type(obj).__name__}, not a function or Potential")


def _decode(vocab: Any, ids: List[int], eos_ids: Sequence[int]) -> Tuple[str, bool]:
    """(text, ended with EOS) of generated ids: the bytes of the tokens before the first EOS."""
    ended = False
    for k, t in enumerate(ids):
        if t in eos_ids:
            ids, ended = ids[:k], True
            break
    data = b"".join(vocab.token_bytes(t) for t in ids if t < vocab.vocab_size)
    return data.decode("utf-8", errors="replace"), ended


def _eos_ids(tokenizer: Any, generation_config: Any) -> List[int]:
    ids: List[int] = []
    for src in (getattr(tokenizer, "eos_token_id", None), getattr(generation_config, "eos_token_id", None)):
        if src is None:
            continue
        for e in src if isinstance(src, (list, tuple)) else [src]:
            if int(e) not in ids:
                ids.append(int(e))
    return ids


# --------------------------------------------------------------- generate


def _check_model_path(name: str) -> None:
    """Fail fast (before importing torch) on a model path that does not exist."""
    p = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_like_path and not p.exists():
        raise CLIError(f"cannot load model {name!r}: no such file or directory")
    if p.exists() and not p.is_dir():
        raise CLIError(f"cannot load model {name!r}: not a directory (give the folder written by save_pretrained)")
    if p.is_dir():
        if not (p / "config.json").exists():
            raise CLIError(f"cannot load model {name!r}: no config.json in it (expected a folder written by save_pretrained)")
        if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            raise CLIError(f"cannot load model {name!r}: no tokenizer.json in it (save the tokenizer there too)")


def _load_model(name: str, verbose: bool) -> Tuple[Any, Any, Any]:
    """(tokenizer, generation config or None, model) from local files only."""
    _check_model_path(name)
    _, transformers = _import_hf()
    kw = dict(local_files_only=True)
    local = Path(name).expanduser().is_dir()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, **kw)
    except Exception as e:  # noqa: BLE001 - any failure is reported in one line
        if not local:
            raise CLIError(
                f"cannot load model {name!r}: it is neither a local directory nor in the local "
                "Hugging Face cache (tokensieve never downloads models)"
            ) from None
        raise CLIError(f"cannot load the tokenizer of model {name!r}: {_first_line(e)}") from None
    if not getattr(tokenizer, "is_fast", False) and getattr(tokenizer, "backend_tokenizer", None) is None:
        raise CLIError(f"the tokenizer of {name!r} is not a fast tokenizer (tokenizer.json); tokensieve needs one")
    try:
        gen_config = transformers.GenerationConfig.from_pretrained(name, **kw)
    except Exception:  # noqa: BLE001 - optional file
        gen_config = None
    t0 = time.perf_counter()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(name, **kw)
    except Exception as e:  # noqa: BLE001
        raise CLIError(f"cannot load model {name!r}: {_first_line(e)}") from None
    model.eval()
    if verbose:
        print(f"[tokensieve] model loaded in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return tokenizer, gen_config, model


def _keep_large_allocations_on_cpu(model: Any, verbose: bool) -> None:
    """For a model on the CPU, stop glibc from mapping and unmapping every
    step's logits (:func:`tokensieve.models.keep_large_allocations`)."""
    from .models import _device_of, keep_large_allocations

    if _device_of(model).type == "cpu":
        applied = keep_large_allocations()
        if verbose:
            state = "kept in the heap" if applied else "left to the allocator's defaults"
            print(f"[tokensieve] large CPU allocations {state}", file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> int:
    """``tokensieve generate``: constrained generation with a local model."""
    _check_model_path(args.model)
    torch, transformers = _import_hf()
    with _quiet_transformers(transformers, not args.verbose):
        return _run_generate(args, torch, transformers)


def _run_generate(args: argparse.Namespace, torch: Any, transformers: Any) -> int:
    import tokensieve as ts
    from .hf import LogitsProcessor

    sample = args.sample if args.sample is not None else args.num_samples > 1
    if not sample and args.num_samples > 1:
        raise CLIError("--greedy gives a single output; use --sample with --num-samples > 1")

    tokenizer, gen_config, model = _load_model(args.model, args.verbose)
    _keep_large_allocations_on_cpu(model, args.verbose)
    eos = _eos_ids(tokenizer, gen_config or model.generation_config)
    try:
        vocab = ts.Vocabulary.from_huggingface(tokenizer, eos_token_ids=eos or None)
    except (TypeError, ValueError) as e:
        raise CLIError(f"cannot read the tokenizer of {args.model!r}: {_first_line(e)}") from None
    eos = list(vocab.eos_token_ids)
    if not eos:
        print("tokensieve: warning: the tokenizer has no EOS token; outputs end at --max-new-tokens",
              file=sys.stderr)
    t0 = time.perf_counter()
    constraint = _build_constraint(args, vocab)
    if args.verbose:
        print(f"[tokensieve] constraint compiled in {(time.perf_counter() - t0) * 1e3:.1f} ms "
              f"({constraint.num_states} states)", file=sys.stderr)

    potentials = [_load_potential(spec) for spec in args.potential or []]
    if potentials and args.smc is None:
        raise CLIError("--potential needs --smc N (Python constraints are applied by SMC)")
    if args.smc is not None:
        from . import smc

        t0 = time.perf_counter()
        kw: Dict[str, Any] = {"potentials": potentials, "sampler": args.sampler} if potentials else {}
        try:
            res = smc.generate(model, tokenizer, args.prompt, constraint, n_particles=args.smc,
                               max_new_tokens=args.max_new_tokens, seed=args.seed, vocab=vocab, **kw)
        except (ValueError, RuntimeError) as e:
            raise CLIError(f"SMC failed: {_first_line(e)}") from None
        smc.print_result(res, top=max(args.num_samples, 10))
        if args.verbose:
            print(f"[tokensieve] SMC with {args.smc} particles in {time.perf_counter() - t0:.2f} s",
                  file=sys.stderr)
        return 0

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None)
    proc = LogitsProcessor(constraint, eos_token_ids=eos or None, pad_token_id=pad)
    enc = tokenizer(args.prompt, return_tensors="pt")
    if enc["input_ids"].shape[1] == 0:  # empty prompt and no BOS: start from a BOS/EOS token
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (eos[0] if eos else 0)
        enc = {"input_ids": torch.tensor([[start]]), "attention_mask": torch.ones(1, 1, dtype=torch.long)}
    torch.manual_seed(args.seed)
    gen_kw = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=sample,
        num_return_sequences=args.num_samples,
        logits_processor=transformers.LogitsProcessorList([proc]),
    )
    if eos:
        gen_kw["eos_token_id"] = eos
    if pad is not None:
        gen_kw["pad_token_id"] = pad
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            out = model.generate(**enc, **gen_kw)
    except Exception as e:  # noqa: BLE001
        raise CLIError(f"generation failed: {_first_line(e)}") from None
    elapsed = time.perf_counter() - t0

    prompt_len = enc["input_ids"].shape[1]
    incomplete = 0
    for i, row in enumerate(out[:, prompt_len:].tolist()):
        text, ended = _decode(vocab, row, eos)
        print(text, flush=True)
        if not ended:
            incomplete += 1
    if incomplete:
        print(f"tokensieve: note: {incomplete} of {args.num_samples} outputs reached --max-new-tokens="
              f"{args.max_new_tokens} before the pattern was complete (each is a valid prefix)", file=sys.stderr)
    if args.verbose and proc.mask_times:
        mean_us = sum(proc.mask_times) / len(proc.mask_times) * 1e6
        print(f"[tokensieve] generated in {elapsed:.2f} s; mask {mean_us:.1f} us/step "
              f"over {len(proc.mask_times)} steps", file=sys.stderr)
    return 0


# ------------------------------------------------------------------- demo


def _demo_tokenizer_path() -> Path:
    return Path(__file__).resolve().parent / "data" / "gpt2_tokenizer.json"


def _demo_sample(
    torch: Any, model: Any, constraint: Any, prompt: List[int], eos: int, n: int, gen: Any
) -> Tuple[List[List[int]], float]:
    """``n`` samples from ``model`` after ``prompt`` under ``constraint``:
    per step, the live rows' bitmasks (one matcher per row) are applied to
    the logits, a token is drawn from the rest, and the matchers consume
    it; a row ends with EOS or after ``DEMO_MAX_NEW_TOKENS``. Returns each
    row's new token ids (EOS included) and the seconds spent masking."""
    import tokensieve as ts

    matchers = [ts.Matcher(constraint) for _ in range(n)]
    bitmask = ts.allocate_token_bitmask(n, constraint.vocab_size)
    ids = torch.tensor([prompt] * n, dtype=torch.long)
    new: List[List[int]] = [[] for _ in range(n)]
    live = list(range(n))
    mask_s = 0.0
    with torch.no_grad():
        for _ in range(DEMO_MAX_NEW_TOKENS):
            if not live:
                break
            logits = model(ids[live])
            t0 = time.perf_counter()
            rows = bitmask[: len(live)]
            ts.fill_next_token_bitmasks([matchers[i] for i in live], rows)
            ts.apply_token_bitmask_inplace(logits, rows)
            mask_s += time.perf_counter() - t0
            # Gumbel-max: a draw from softmax(logits), masked tokens (-inf)
            # never win (torch.multinomial over 50k tokens is ~10x slower).
            u = torch.rand(logits.shape, generator=gen)
            toks = (logits - torch.log(-torch.log(u))).argmax(dim=-1).tolist()
            t0 = time.perf_counter()
            step = torch.full((n, 1), eos, dtype=torch.long)
            for i, t in zip(live, toks):
                if not matchers[i].consume_token(t):  # pragma: no cover - the mask forbids this
                    raise RuntimeError(f"sampled token {t} is not allowed by the constraint")
                new[i].append(t)
                step[i, 0] = t
            mask_s += time.perf_counter() - t0
            ids = torch.cat([ids, step], dim=1)
            live = [i for i in live if not matchers[i].eos_consumed]
    return new, mask_s


def cmd_demo(args: argparse.Namespace) -> int:
    """``tokensieve demo``: offline, a tiny random GPT-2 under a few regexes.

    Needs torch and the ``tokenizers`` package only: the model is
    :class:`tokensieve._demo_model.TinyGPT2` (GPT-2's architecture in plain
    torch), since importing transformers' GPT-2 costs more than the demo."""
    try:
        import torch
        from tokenizers import Tokenizer
    except ImportError as e:
        raise CLIError(f"the demo needs torch and tokenizers ({e}); pip install 'tokensieve[hf]'") from None
    # A 64-dim model gains nothing from intra-op threads, and on a busy machine
    # their hand-offs can cost far more than the work itself.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(args, torch, Tokenizer)
    finally:
        torch.set_num_threads(threads)


def _run_demo(args: argparse.Namespace, torch: Any, tokenizer_cls: Any) -> int:
    import tokensieve as ts

    from ._demo_model import TinyGPT2

    out = sys.stdout
    t_start = time.perf_counter()
    path = _demo_tokenizer_path()
    if not path.exists():
        raise CLIError(f"the shipped GPT-2 tokenizer is missing ({path}); reinstall tokensieve")
    tokenizer = tokenizer_cls.from_file(str(path))
    eos = tokenizer.token_to_id("<|endoftext|>")
    vocab = ts.Vocabulary.from_tokenizer_file(path, eos_token_ids=[eos])
    torch.manual_seed(args.seed)
    model = TinyGPT2(vocab.vocab_size, dim=64, layers=2, heads=4, positions=128).eval()
    prompt = tokenizer.encode(DEMO_PROMPT).ids

    w = out.write
    w("tokensieve demo: regex-constrained generation with a language model\n\n")
    w(f"  model      tiny GPT-2 (2 layers, 64-dim, 4 heads; PyTorch) with RANDOM weights (seed {args.seed})\n")
    w(f"  tokenizer  the real GPT-2 tokenizer ({vocab.vocab_size} tokens), shipped with tokensieve\n")
    w(f"  decoding   sampling, at most {DEMO_MAX_NEW_TOKENS} new tokens, prompt {DEMO_PROMPT!r},\n")
    w("             a token bitmask per step (tokensieve Matcher + apply_token_bitmask_inplace)\n\n")
    w("The model is untrained, so what it writes is random. But before every step the\n")
    w("mask removes each token that would break the pattern, so every string below\n")
    w("matches its pattern in full, and it ends (EOS) exactly when it is complete.\n")

    gen = torch.Generator().manual_seed(args.seed)
    total = matched = 0
    for name, pattern in DEMO_PATTERNS:
        t0 = time.perf_counter()
        constraint = ts.compile_regex(pattern, vocab)
        compile_ms = (time.perf_counter() - t0) * 1e3
        w(f"\n{name}   {pattern}\n")
        w(f"  (compiled in {compile_ms:.1f} ms, {constraint.num_states} automaton states)\n")
        # All samples of a pattern in one batch.
        samples, mask_s = _demo_sample(torch, model, constraint, prompt, eos, args.num_samples, gen)
        decoded = [(*_decode(vocab, ids, [eos]), len(ids)) for ids in samples]
        # The masking time per generated token, over the whole batch.
        mean_us = mask_s / max(1, sum(n for *_, n in decoded)) * 1e6
        rows = [(text, n, ended and re.fullmatch(pattern, text) is not None) for text, ended, n in decoded]
        width = max(len(r[0]) for r in rows)
        for text, n, ok in rows:
            total += 1
            matched += ok
            mark = "" if ok else "   <-- DOES NOT MATCH (please report)"
            w(f"{RESULT_PREFIX}{text:<{width}}   {n:2d} tokens, mask {mean_us:7.1f} us/token{mark}\n")
        out.flush()

    w(f"\n{matched} of {total} strings fully match their patterns (checked again with Python's re).\n")
    w("Mask time: the masking work per generated token, over the pattern's batch (advance\n")
    w("the matchers, compute the bitmasks, apply them to the logits), including the first\n")
    w(f"fill of a per-state mask cache. Total demo time {time.perf_counter() - t_start:.1f} s.\n\n")
    w("With a real model:  tokensieve generate --model PATH --regex '[0-9]{4}-[0-9]{2}-[0-9]{2}' "
      "--prompt 'Date:'\n")
    out.flush()
    return 0 if matched == total else 1
