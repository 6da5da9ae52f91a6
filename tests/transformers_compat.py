"""The Hugging Face-facing tests against the newest, the last 4.x and the
lowest ``transformers`` we support, with deprecation warnings as errors.

    python tests/transformers_compat.py [--lowest 4.40.0] [--middle 4.57.6]
        [--only newest|middle|lowest] [-- extra pytest args]

* **newest**: the ``transformers`` of the running environment (CI installs
  the newest release that ``pyproject.toml`` allows);
* **middle**: the last 4.x release (``past_key_values`` still accepted as
  tuples, with deprecation warnings; the ``tokenizers`` 0.22 line);
* **lowest**: the floor of ``pyproject.toml`` (``transformers>=4.40``).

The middle and lowest versions are installed into throwaway virtual
environments that see the running environment's packages (torch, numpy,
pytest, tokensieve itself) but have their own ``transformers`` and what
that version pins (for 4.40: ``tokenizers`` 0.19, ``huggingface_hub`` <
1.0). The environments are kept under ``$TOKENSIEVE_COMPAT_DIR`` (default:
the system temp dir) and reused.

Each run is ``pytest -W error::DeprecationWarning -W error::FutureWarning``
over :data:`TESTS`: a warning that our code paths (``tokensieve.hf``,
``tokensieve.models.HFModel``, the SMC drivers) trigger in ``transformers``
fails the run. On the lowest version, :data:`OLD_TOKENIZERS_DESELECT`
skips the vocabulary tests of tokenizer files that ``tokenizers`` 0.19
cannot read (a format newer than it). Needs PyPI (pip) for the lowest
version's first run. Exit status: non-zero if any run failed.
"""

from __future__ import annotations

import argparse
import os
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]

#: The floor of ``transformers`` in pyproject.toml (``hf`` and ``test`` extras).
LOWEST = "4.40.0"

#: The last 4.x release, between the floor and 5.x.
MIDDLE = "4.57.6"

#: Tests that exercise tokensieve.hf, HFModel and the SMC drivers on tiny
#: random transformers models, Vocabulary.from_huggingface, and the CLI's
#: ``generate`` (AutoModelForCausalLM / AutoTokenizer of a local folder).
TESTS = (
    "tests/test_hf.py",
    "tests/test_cli.py",
    "tests/test_smc_hf.py",
    "tests/test_smc_potentials.py",
    "tests/test_examples.py",
    "tests/test_vocab.py",
)

#: ``-k`` expression for the lowest version: tokenizers 0.19 (the newest
#: that transformers 4.40 allows) cannot parse the Qwen 3 and Gemma 3
#: tokenizer.json files ("data did not match any variant of untagged enum
#: ModelWrapper": their merges are pairs, a format of tokenizers >= 0.20).
OLD_TOKENIZERS_DESELECT = "not qwen3 and not gemma"

WARNINGS_AS_ERRORS = ("-W", "error::DeprecationWarning", "-W", "error::FutureWarning")


def version_env(version: str) -> Path:
    """A virtual environment with ``transformers==version`` that sees this
    interpreter's packages (made, or reused, under the compat dir)."""
    base = Path(os.environ.get("TOKENSIEVE_COMPAT_DIR") or tempfile.gettempdir())
    env = base / f"tokensieve-transformers-{version}-py{sys.version_info[0]}{sys.version_info[1]}"
    py = env / "bin" / "python"
    done = env / ".installed"
    if done.exists() and py.exists():
        return py
    # Without pip of its own (no ensurepip needed, e.g. Debian's python3
    # without python3-venv): this interpreter's pip installs into it
    # (``pip --python``, pip >= 22.3).
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)], check=True)
    # This interpreter may itself be a virtual environment: its site-packages
    # are not the base's "system" ones, so list them in a .pth (after the new
    # environment's own site-packages, which therefore win).
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        ours.add(site.getusersitepackages())  # packages installed with pip --user
    (purelib / "_tokensieve_parent_env.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--disable-pip-version-check",
                    f"transformers=={version}"], check=True)
    done.write_text(version)
    return py


def run_tests(python: str, label: str, extra: Sequence[str], deselect: Optional[str] = None) -> int:
    version = subprocess.run([python, "-c", "import transformers; print(transformers.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *WARNINGS_AS_ERRORS, *TESTS, *extra]
    if deselect:
        cmd += ["-k", deselect]
    print(f"== {label}: transformers {version}: {' '.join(cmd[1:])}", flush=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    print(f"== {label}: transformers {version}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
    return rc


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lowest", default=LOWEST, help=f"the lowest transformers version (default {LOWEST})")
    p.add_argument("--middle", default=MIDDLE, help=f"a version in between (default {MIDDLE})")
    p.add_argument("--only", choices=("newest", "middle", "lowest"))
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    a = p.parse_args(argv)
    rcs: List[int] = []
    if a.only in (None, "newest"):
        rcs.append(run_tests(sys.executable, "newest", a.pytest_args))
    if a.only in (None, "middle"):
        rcs.append(run_tests(str(version_env(a.middle)), "middle", a.pytest_args))
    if a.only in (None, "lowest"):
        rcs.append(run_tests(str(version_env(a.lowest)), "lowest", a.pytest_args, OLD_TOKENIZERS_DESELECT))
    return max(rcs)


if __name__ == "__main__":
    sys.exit(main())
