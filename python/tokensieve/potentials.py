"""Constraints written as Python functions: potentials.

A *potential* scores decoded text: ``prefix(text)`` is the log weight of a
text that may still grow (``-inf`` = no continuation can be accepted) and
``complete(text)`` the log weight of a finished text. Boolean functions
are the common case (``True`` -> ``0.0``, ``False`` -> ``-inf``).

Why a protocol rather than a grammar: many real constraints (SQL that runs,
code that passes tests, text without an "e") are easy to *check* and hard
to compile. :func:`accept_function` turns a prefix potential into the
accept callable of :func:`tokensieve._core.awrs_sample`, which asks it only
about the tokens the model actually proposes.

Potentials multiply: ``a * b`` scores with the sum of log weights and stops
at the first factor that returns ``-inf`` (put the cheap factor first).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable, Dict, List, Optional, Sequence, Union

from . import _core

__all__ = ["Potential", "FunctionPotential", "Mask", "Product", "potential", "complete_only", "accept_function", "score"]

Score = Union[bool, float]


def _as_log_weight(value: object, where: str) -> float:
    """A potential's return value as a log weight; TypeError when unusable."""
    if type(value) is float:  # the common cases first, without the ABC check of Real
        if value != value:
            raise TypeError(f"{where} returned NaN (expected a bool or a log weight)")
        return value
    if isinstance(value, bool):
        return 0.0 if value else -math.inf
    if isinstance(value, Real):
        x = float(value)
        if math.isnan(x):
            raise TypeError(f"{where} returned NaN (expected a bool or a log weight)")
        return x
    raise TypeError(f"{where} returned {type(value).__name__} (expected a bool or a log weight)")


class Potential:
    """Base class: override :meth:`prefix` and :meth:`complete`; the batch
    variants loop over them unless a subclass has something faster."""

    name: str = "potential"

    def prefix(self, text: bytes) -> float:
        """Log weight of ``text`` as a prefix (``-inf`` = impossible)."""
        return 0.0

    def complete(self, text: bytes) -> float:
        """Log weight of ``text`` as a finished string."""
        return self.prefix(text)

    def batch_prefix(self, texts: Sequence[bytes]) -> List[float]:
        """:meth:`prefix` of each text."""
        return [self.prefix(t) for t in texts]

    def batch_complete(self, texts: Sequence[bytes]) -> List[float]:
        """:meth:`complete` of each text."""
        return [self.complete(t) for t in texts]

    def __mul__(self, other: object) -> "Product":
        if isinstance(other, _core.Constraint):
            return Product([Mask(other), self])  # the mask always goes first
        if not isinstance(other, Potential):
            return NotImplemented
        return Product([self, other])


class FunctionPotential(Potential):
    """A potential from a plain function of the decoded text."""

    def __init__(self, fn: Callable[[bytes], Score], *, prefix: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"potential: expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.on_prefix = prefix
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def prefix(self, text: bytes) -> float:
        """``fn(text)`` when the function applies to prefixes, else ``0.0``."""
        if not self.on_prefix:
            return 0.0
        return _as_log_weight(self.fn(text), f"potential {self.name!r}")

    def complete(self, text: bytes) -> float:
        """``fn(text)`` on the finished text."""
        return _as_log_weight(self.fn(text), f"potential {self.name!r}")


class Mask(Potential):
    """A compiled constraint (regex / grammar / JSON) as a factor of a
    :class:`Product`: ``potential * constraint`` or ``Mask(constraint) *
    potential``. :func:`tokensieve.smc.generate` applies it as the token
    mask, before any Python function is asked; on its own it cannot score
    bytes (its :meth:`prefix` raises ``TypeError``)."""

    def __init__(self, constraint: "_core.Constraint") -> None:
        if not isinstance(constraint, _core.Constraint):
            raise TypeError(f"Mask: expected a compiled Constraint, got {type(constraint).__name__}")
        self.constraint = constraint
        self.name = "mask"

    def prefix(self, text: bytes) -> float:
        """Not available: a constraint works on token ids, as a mask."""
        raise TypeError("a compiled constraint is applied as a token mask by smc.generate; it does not score bytes")

    def complete(self, text: bytes) -> float:
        """Not available (see :meth:`prefix`)."""
        return self.prefix(text)


class Product(Potential):
    """The product of potentials (sum of log weights), short-circuiting at
    the first factor that gives ``-inf``."""

    def __init__(self, factors: Sequence[Potential]) -> None:
        flat: List[Potential] = []
        for f in factors:
            flat.extend(f.factors if isinstance(f, Product) else [f])
        masks = [f for f in flat if isinstance(f, Mask)]
        flat = masks + [f for f in flat if not isinstance(f, Mask)]  # masks first
        self.factors: List[Potential] = flat
        self.name = " * ".join(f.name for f in flat)

    def _score(self, text: bytes, complete: bool) -> float:
        total = 0.0
        for f in self.factors:
            total += _as_log_weight(f.complete(text) if complete else f.prefix(text), f"potential {f.name!r}")
            if total == -math.inf:
                break
        return total

    def _batch(self, texts: Sequence[bytes], complete: bool) -> List[float]:
        """Factor by factor over the texts still possible, each factor's own
        batch method (so a factor with a fast batch path keeps it)."""
        totals = [0.0] * len(texts)
        live = list(range(len(texts)))
        for f in self.factors:
            if not live:
                break
            sub = [texts[i] for i in live]
            vals = f.batch_complete(sub) if complete else f.batch_prefix(sub)
            if len(vals) != len(sub):
                raise TypeError(f"potential {f.name!r} returned {len(vals)} scores for {len(sub)} texts")
            for i, v in zip(live, vals):
                totals[i] += _as_log_weight(v, f"potential {f.name!r}")
            live = [i for i in live if totals[i] > -math.inf]
        return totals

    def batch_prefix(self, texts: Sequence[bytes]) -> List[float]:
        """:meth:`prefix` of each text, one batch call per factor."""
        return self._batch(texts, False)

    def batch_complete(self, texts: Sequence[bytes]) -> List[float]:
        """:meth:`complete` of each text, one batch call per factor."""
        return self._batch(texts, True)

    def prefix(self, text: bytes) -> float:
        """Sum of the factors' prefix log weights."""
        return self._score(text, False)

    def complete(self, text: bytes) -> float:
        """Sum of the factors' complete log weights."""
        return self._score(text, True)


def potential(fn: Callable[[bytes], Score], *, prefix: bool = True) -> FunctionPotential:
    """A potential from ``fn(text: bytes) -> bool | float`` (Boolean or log
    weight). ``prefix=False`` makes it complete-only (checked only on
    finished texts)."""
    return FunctionPotential(fn, prefix=prefix)


def complete_only(fn: Callable[[bytes], Score]) -> FunctionPotential:
    """A potential checked only on finished texts (e.g. "passes the tests")."""
    return FunctionPotential(fn, prefix=False)


def _with_context(e: BaseException, name: str, particle: Optional[int], step: Optional[int]) -> BaseException:
    """``e`` again, of the same type when it can be rebuilt from a message,
    with the potential, particle and step appended to its message (a
    ``RuntimeError`` carrying them when the type cannot be rebuilt)."""
    msg = f"{e} (potential {name!r}, particle {particle}, step {step})"
    try:
        new = type(e)(msg)
    except Exception:
        new = RuntimeError(f"{type(e).__name__}: {msg}")
    if not isinstance(new, Exception):  # pragma: no cover - BaseException subclasses
        return e
    return new


def score(
    pot: Potential,
    texts: Sequence[bytes],
    *,
    complete: bool = False,
    particles: Optional[Sequence[int]] = None,
    step: Optional[int] = None,
) -> List[float]:
    """``pot.batch_prefix(texts)`` (or ``batch_complete``), checked: one log
    weight per text, each a number that is not NaN (``TypeError``
    otherwise). An exception from the potential is re-raised, with the same
    type where possible, naming the potential, the particle (``particles[i]``
    for ``texts[i]``; found by rerunning the texts one at a time) and
    ``step``."""
    if not texts:
        return []
    fn = pot.batch_complete if complete else pot.batch_prefix
    try:
        raw = fn(list(texts))
        if not isinstance(raw, (list, tuple)) and not hasattr(raw, "__len__"):
            raise TypeError(f"potential {pot.name!r} returned {type(raw).__name__} from a batch call (expected a list)")
        if len(raw) != len(texts):
            raise TypeError(f"potential {pot.name!r} returned {len(raw)} scores for {len(texts)} texts")
        return [_as_log_weight(v, f"potential {pot.name!r}") for v in raw]
    except Exception as e:
        who: Optional[int] = particles[0] if particles is not None and len(particles) == 1 else None
        if particles is not None and len(texts) > 1:
            one = pot.complete if complete else pot.prefix
            for t, p in zip(texts, particles):  # find the particle that fails
                try:
                    _as_log_weight(one(t), f"potential {pot.name!r}")
                except Exception:
                    who = p
                    break
        raise _with_context(e, pot.name, who, step) from e


def accept_function(
    pot: Potential,
    context: bytes,
    token_bytes: Sequence[bytes],
    *,
    particle: Optional[int] = None,
    step: Optional[int] = None,
    eos_token_ids: Sequence[int] = (),
    cache: Optional[Dict[int, float]] = None,
) -> Callable[[List[int]], List[bool]]:
    """The accept callable for :func:`tokensieve._core.awrs_sample`: token
    ``t`` is accepted when ``pot.prefix(context + token_bytes[t]) > -inf``;
    an EOS id (``eos_token_ids``) when ``pot.complete(context) > -inf``.
    The log weights are stored in ``cache`` (token -> log weight) when one is
    given. An exception from the potential is re-raised with the particle
    and step in its message; a NaN or non-number return is a ``TypeError``."""
    eos = frozenset(int(e) for e in eos_token_ids)

    def accept(tokens: List[int]) -> List[bool]:
        body = [t for t in tokens if t not in eos]
        got: Dict[int, float] = {}
        if body:
            ps = [particle] if particle is not None else None
            vals = score(pot, [context + token_bytes[t] for t in body], particles=ps and ps * len(body), step=step)
            got.update(zip(body, vals))
        if len(body) < len(tokens):
            got.update((t, v) for t in tokens if t in eos for v in score(
                pot, [context], complete=True, particles=[particle] if particle is not None else None, step=step))
        if cache is not None:
            cache.update(got)
        return [got[t] > -math.inf for t in tokens]

    return accept
