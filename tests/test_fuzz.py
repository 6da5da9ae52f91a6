"""The fuzz campaign (tests/fuzz_campaign.py) in a subprocess: a crash of
the interpreter is a failed test here, not a dead test run. In CI
(``CI`` set) it runs about 400,000 generated inputs (at least 100,000 asserted); locally a tenth of
that, to keep the suite quick. ``TOKENSIEVE_FUZZ_SCALE`` overrides."""

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
    scale = os.environ.get("TOKENSIEVE_FUZZ_SCALE", "5" if ci else "0.5")
    script = Path(__file__).with_name("fuzz_campaign.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--scale", scale], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"campaign failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    total = int(re.search(r"TOTAL (\d+) inputs", proc.stdout).group(1))
    print(proc.stdout)
    if ci:
        assert total >= 100_000, proc.stdout
    else:
        assert total >= 5_000, proc.stdout
