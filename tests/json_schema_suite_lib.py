"""Loads ``benches/json_schema_suite.py`` (the engine adapters and the suite
runner) as a module, so that the tests run exactly the bench's harness.

``benches`` is not a package; this imports the file by path once and caches
it in ``sys.modules`` under ``json_schema_suite``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benches" / "json_schema_suite.py"


def load():
    """The ``benches/json_schema_suite.py`` module."""
    mod = sys.modules.get("json_schema_suite")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == BENCH:
        return mod
    spec = importlib.util.spec_from_file_location("json_schema_suite", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["json_schema_suite"] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod
