"""The fuzz campaign (tests/fuzz_campaign.py) in a subprocess: a crash of
the interpreter is a failed test here, not a dead test run. Every run
covers at least 100,000 generated inputs (about 120,000, ~10 s; asserted),
whether or not the CI runner sets ``CI``; with ``CI`` set, about 400,000
(~40 s). ``TOKENSIEVE_FUZZ_SCALE`` overrides the scale (and the floor)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")


def test_fuzz_campaign_no_crash_panic_or_hang():
    ci = bool(os.environ.get("CI"))
    override = os.environ.get("TOKENSIEVE_FUZZ_SCALE")
    scale = override or ("5" if ci else "1.5")
    script = Path(__file__).with_name("fuzz_campaign.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--scale", scale], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"campaign failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    total = int(re.search(r"TOTAL (\d+) inputs", proc.stdout).group(1))
    print(proc.stdout)
    assert total >= (1_000 if override else 100_000), proc.stdout
