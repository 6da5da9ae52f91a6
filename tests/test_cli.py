"""The ``tokensieve`` command line (tokensieve.cli.main, python -m tokensieve)."""

from __future__ import annotations

import os
import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tokensieve as ts
from tokensieve import cli

PHONE = r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"
SHIPPED_GPT2 = Path(ts.__file__).parent / "data" / "gpt2_tokenizer.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_module(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m tokensieve ARGS`` in a fresh interpreter (no network needed)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "tokensieve", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def demo_results(stdout: str):
    """[(pattern, text)] from the demo's output: a header line 'NAME   PATTERN', then result lines."""
    patterns = dict(cli.DEMO_PATTERNS)
    current = None
    results = []
    for line in stdout.splitlines():
        for name, pattern in patterns.items():
            if line == f"{name}   {pattern}":
                current = pattern
        if line.startswith(cli.RESULT_PREFIX):
            m = re.match(re.escape(cli.RESULT_PREFIX) + r"(.*?)\s{3,}\s*(\d+) tokens, mask\s+([0-9.]+) us/token$", line)
            assert m, f"unparsable result line {line!r}"
            assert current is not None
            results.append((current, m.group(1), int(m.group(2)), float(m.group(3))))
    return results


# ------------------------------------------------------------------- demo


def test_demo_every_string_matches(capsys):
    pytest.importorskip("transformers")
    assert cli.main(["demo"]) == 0
    out, err = capsys.readouterr()
    assert "random" in out.lower() and "Traceback" not in err
    results = demo_results(out)
    assert len(results) == 3 * len(cli.DEMO_PATTERNS)
    assert {p for p, *_ in results} == {p for _, p in cli.DEMO_PATTERNS}
    for pattern, text, n_tokens, mask_us in results:
        assert re.fullmatch(pattern, text), f"{text!r} does not match {pattern!r}"
        if "(19|20)" in pattern:  # the ISO date pattern admits only real dates
            datetime.date.fromisoformat(text)
        assert 1 <= n_tokens <= cli.DEMO_MAX_NEW_TOKENS
        assert mask_us > 0
    assert f"{len(results)} of {len(results)} strings fully match" in out


def test_demo_seeded_and_reproducible(capsys):
    pytest.importorskip("transformers")
    assert cli.main(["demo", "--seed", "3", "--num-samples", "1"]) == 0
    first = [(p, t) for p, t, *_ in demo_results(capsys.readouterr().out)]
    assert cli.main(["demo", "--seed", "3", "--num-samples", "1"]) == 0
    second = [(p, t) for p, t, *_ in demo_results(capsys.readouterr().out)]
    assert first == second and len(first) == len(cli.DEMO_PATTERNS)
    for pattern, text in first:
        assert re.fullmatch(pattern, text)


def test_python_dash_m_demo():
    pytest.importorskip("transformers")
    r = run_module("demo", "--num-samples", "1")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    results = demo_results(r.stdout)
    assert len(results) == len(cli.DEMO_PATTERNS)
    for pattern, text, *_ in results:
        assert re.fullmatch(pattern, text)


# --------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """A tiny random GPT-2 saved with the real GPT-2 tokenizer, as save_pretrained writes it."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny-gpt2")
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(SHIPPED_GPT2), eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=50257, n_positions=128, bos_token_id=50256, eos_token_id=50256
    )
    model = transformers.GPT2LMHeadModel(cfg)
    model.generation_config.pad_token_id = 50256
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_generate_with_local_model(local_model, capsys):
    argv = ["generate", "--model", str(local_model), "--regex", PHONE, "--prompt", "Call me at"]
    rc = cli.main(argv + ["--num-samples", "3", "--seed", "1", "--max-new-tokens", "20"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert re.fullmatch(PHONE, line), line
    assert "Traceback" not in err and "note:" not in err
    # Same seed, same output; greedy is the default for a single sample.
    assert cli.main(argv + ["--num-samples", "3", "--seed", "1", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert cli.main(argv + ["--greedy"]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert len(greedy) == 1 and re.fullmatch(PHONE, greedy[0])


def test_generate_verbose_reports_timings(local_model, capsys):
    rc = cli.main(["generate", "--model", str(local_model), "--regex", "[0-9]{2}-[a-z]{2}", "-v"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert re.fullmatch("[0-9]{2}-[a-z]{2}", out.strip())
    assert re.search(r"mask [0-9.]+ us/step over \d+ steps", err)
    # A CPU model: the large allocations are kept in the heap (glibc), or
    # the allocator is left alone (other C libraries, user settings).
    assert re.search(r"large CPU allocations (kept in the heap|left to the allocator's defaults)", err)


def test_generate_cut_off_prints_prefix_and_note(local_model, capsys):
    pattern = "[a-z]+( [a-z]+)*"
    rc = cli.main(["generate", "--model", str(local_model), "--regex", pattern, "--max-new-tokens", "3"])
    out, err = capsys.readouterr()
    assert rc == 0
    regex = pytest.importorskip("regex")
    assert regex.fullmatch(pattern, out.rstrip("\n"), partial=True)
    assert "reached --max-new-tokens=3" in err


def test_generate_missing_model_path(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    rc = cli.main(["generate", "--model", str(missing), "--regex", "[0-9]+", "--prompt", "x"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("tokensieve: error: cannot load model") and "no such file or directory" in err


def test_generate_missing_model_subprocess(tmp_path):
    r = run_module("generate", "--model", str(tmp_path / "nope"), "--regex", "[0-9]+")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"tokensieve: error: cannot load model {str(tmp_path / 'nope')!r}: no such file or directory"
    ]


def test_generate_unloadable_models(tmp_path, capsys):
    pytest.importorskip("transformers")
    # A name that is not a directory and not in the local cache: nothing is downloaded.
    rc = cli.main(["generate", "--model", "surely-not-a-cached-model-xyz", "--regex", "[0-9]+"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "neither a local directory nor in the local Hugging Face cache" in err
    # A directory that is not a model.
    (tmp_path / "junk").mkdir()
    rc = cli.main(["generate", "--model", str(tmp_path / "junk"), "--regex", "[0-9]+"])
    err = capsys.readouterr().err
    assert rc == 2 and "no config.json" in err and err.count("\n") == 1
    # A broken config.json next to a real tokenizer.
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(SHIPPED_GPT2, bad / "tokenizer.json")
    (bad / "config.json").write_text("{}")
    rc = cli.main(["generate", "--model", str(bad), "--regex", "[0-9]+"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    # transformers 5 loads the tokenizer and fails on the model; 4.x reads
    # config.json for the tokenizer too and fails there: one line either way.
    assert re.match(rf"tokensieve: error: cannot load (model|the tokenizer of model) {re.escape(repr(str(bad)))}: ", err), err


def test_generate_bad_regex(local_model, capsys):
    rc = cli.main(["generate", "--model", str(local_model), "--regex", "[0-9", "--prompt", "x"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert "Traceback" not in err and err.count("\n") == 1
    assert "--regex '[0-9'" in err and "invalid regex at position" in err


def test_generate_usage_errors(local_model, capsys):
    base = ["generate", "--model", str(local_model)]
    assert cli.main(base) == 2  # no constraint
    assert "--regex" in capsys.readouterr().err
    assert cli.main(base + ["--regex", "a", "--num-samples", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert cli.main(base + ["--regex", "a", "--num-samples", "2", "--greedy"]) == 2
    assert "use --sample" in capsys.readouterr().err
    assert cli.main(base + ["--regex", "a", "--sample", "--greedy"]) == 2
    capsys.readouterr()
    assert cli.main([]) == 2
    assert "generate" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert ts.__version__ in capsys.readouterr().out


def test_console_script_installed():
    exe = shutil.which("tokensieve")
    if exe is None:
        pytest.skip("tokensieve console script not on PATH")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and ts.__version__ in r.stdout


def test_generate_with_lark_grammar(local_model, tmp_path, capsys):
    grammar = tmp_path / "sum.lark"
    grammar.write_text('start: NUM ("+" NUM)*\nNUM: /[1-9][0-9]?/\n')
    rc = cli.main(["generate", "--model", str(local_model), "--grammar", str(grammar),
                   "--num-samples", "3", "--seed", "2", "--max-new-tokens", "24"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    regex = pytest.importorskip("regex")
    for line in lines:  # complete, or a viable prefix when cut off
        assert regex.fullmatch(r"[1-9][0-9]?(\+[1-9][0-9]?)*", line, partial=True), line


def test_generate_with_gbnf_and_json(local_model, tmp_path, capsys):
    grammar = tmp_path / "yn.gbnf"
    grammar.write_text('root ::= ("yes" | "no") "!"\n')
    rc = cli.main(["generate", "--model", str(local_model), "--grammar", str(grammar), "--max-new-tokens", "10"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.strip() in ("yes!", "no!")
    rc = cli.main(["generate", "--model", str(local_model), "--json", "--max-new-tokens", "12", "--seed", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    text = out.rstrip("\n")
    if "note:" not in err:  # finished: must be a complete JSON value
        json.loads(text)
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert not re.search(r"\s", outside_strings), text


def test_generate_bad_grammar(local_model, tmp_path, capsys):
    grammar = tmp_path / "bad.lark"
    grammar.write_text("start: a\n")
    rc = cli.main(["generate", "--model", str(local_model), "--grammar", str(grammar)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and "Traceback" not in err
    assert "bad.lark" in err and "undefined" in err.lower()
    rc = cli.main(["generate", "--model", str(local_model), "--grammar", str(tmp_path / "missing.lark")])
    assert rc == 2 and "cannot read" in capsys.readouterr().err


def test_generate_smc(local_model, capsys):
    rc = cli.main(["generate", "--model", str(local_model), "--regex", "(yes|no|maybe)!", "--prompt", "Answer:",
                   "--smc", "16", "--seed", "4", "--max-new-tokens", "8"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Traceback" not in err
    # Every string the posterior lists is in the language (or a cut-off prefix).
    quoted = [eval(m) for m in re.findall(r"^\s+[0-9.]+\s+('.*'|\".*\")\s*$", out, flags=re.M)]
    assert quoted, out
    regex = pytest.importorskip("regex")
    for s in quoted:
        assert regex.fullmatch(r"(yes|no|maybe)!", s, partial=True), (s, out)
    assert "log" in out.lower()


def test_demo_date_pattern_admits_exactly_the_real_dates_of_a_common_year():
    pattern = dict(cli.DEMO_PATTERNS)["ISO date"]
    admitted = set()
    for m in range(100):
        for d in range(100):
            s = f"2001-{m:02d}-{d:02d}"
            if re.fullmatch(pattern, s):
                admitted.add(s)
    real = {str(datetime.date(2001, 1, 1) + datetime.timedelta(days=k)) for k in range(365)}
    assert admitted == real


def test_generate_with_json_schema(local_model, tmp_path, capsys):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"yes": {"type": "boolean"}}, "required": ["yes"], "additionalProperties": False}))
    rc = cli.main(["generate", "--model", str(local_model), "--json-schema", str(schema), "--max-new-tokens", "12"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    text = out.rstrip("\n")
    assert '{"yes": true}'.startswith(text) or '{"yes": false}'.startswith(text) or text in ('{"yes": true}', '{"yes": false}'), text
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "array", "uniqueItems": true}')
    rc = cli.main(["generate", "--model", str(local_model), "--json-schema", str(bad)])
    out, err = capsys.readouterr()
    assert rc == 2 and "uniqueItems" in err and "Traceback" not in err


def test_help_starts_without_torch_or_transformers():
    """``tokensieve --help`` (and parsing any command line) imports neither
    torch nor transformers: start-up stays well under 0.5 s (~0.1 s idle)."""
    code = (
        "import sys, contextlib, io\n"
        "from tokensieve import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['--help']) == 0\n"
        "    assert cli.main(['generate', '--help']) == 0\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
