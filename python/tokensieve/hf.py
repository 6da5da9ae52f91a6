"""Hugging Face ``transformers`` integration: a drop-in logits processor.

Usage::

    import tokensieve as ts
    from tokensieve.hf import LogitsProcessor
    from transformers import LogitsProcessorList

    proc = LogitsProcessor.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", tokenizer,
                                      vocab_size=model.config.vocab_size)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc]),
                         max_new_tokens=20)

Every row of the batch (``batch_size * num_return_sequences`` rows) gets its
own :class:`tokensieve.Matcher`; at each step the processor feeds each
matcher the token its row generated last, fills a packed bitmask for all rows
at once (in parallel, in Rust) and sets the logits of disallowed tokens to
``-inf``. A row that ends with EOS is a full match of the pattern; a row cut
off by ``max_new_tokens`` is a prefix of one.

Works with greedy search, sampling, beam search (rows reordered, duplicated
or dropped between steps are followed by their token history), assisted
(speculative) decoding (rows rewound or advanced by several tokens are
resynchronised by rolling their matchers back), batches, left-padded prompts
and ``num_return_sequences``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, List, Optional, Tuple

import numpy as np

try:
    import torch
    from transformers import LogitsProcessor as _HFLogitsProcessor
except ImportError as _e:  # pragma: no cover - exercised only without the extras
    raise ImportError(
        "tokensieve.hf needs torch and transformers: pip install 'tokensieve[hf]'"
    ) from _e

from . import _core
from ._bitmask import _int_arg, _positive_int, allocate_token_bitmask, apply_token_bitmask_inplace

__all__ = ["LogitsProcessor"]


def _beam_search_extends_dead_beams() -> bool:
    """Whether this ``transformers`` runs the beam search from before its
    vectorised rewrite (4.50), which keeps beams whose score is ``-inf``
    (fewer than ``2 x num_beams`` finite candidates, as under a tight
    constraint) and extends them with arbitrary, masked-out tokens."""
    import transformers

    try:
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    except ValueError:  # pragma: no cover - unparseable version: assume a recent one
        return False
    return (major, minor) < (4, 50)


#: See :func:`_beam_search_extends_dead_beams`.
_OLD_BEAM_SEARCH = _beam_search_extends_dead_beams()


class LogitsProcessor(_HFLogitsProcessor):
    """Mask the logits of ``model.generate`` so that the output follows a constraint.

    Args:
        constraint: a compiled :class:`tokensieve.Constraint` (e.g. from
            :func:`tokensieve.compile_regex`), compiled against the vocabulary
            of the model's tokenizer. Its ``vocab_size`` may be smaller than
            the model's logits: the extra columns are always masked.
        eos_token_ids: the EOS ids of the constraint's vocabulary
            (``vocab.eos_token_ids``). Optional: the processor notices EOS
            without them. When given, they are the tokens a finished row may
            still "generate" (transformers replaces those with padding
            anyway), and a row whose text is complete but cannot end (a
            vocabulary without EOS) raises instead of looping.
        pad_token_id: the id ``generate`` pads finished rows with. A row
            that is fed this id while its constraint forbids it is taken as
            stopped by another stopping criterion (e.g. stop strings) rather
            than as an error.

    Attributes:
        constraint: the constraint every row follows.
        mask_times: seconds spent in each call of this processor during the
            current (or last) ``generate()``: consuming the new tokens,
            computing the bitmask of all rows and applying it to the logits.
            One entry per decoding step; reset with the processor.

    The processor keeps per-row state: on the first call of a
    ``generate()`` it records the prompt length and creates one matcher per
    row; on later calls it consumes the last token of every row. Each row
    of a call must extend some row of the previous call by one token; beam
    search reorders and duplicates rows between steps, so when the rows are
    not simply extended in place, each is matched to the previous row with
    the same token history and takes (a copy of) its matcher. Assisted
    decoding rewinds rows to the accepted part of a draft and advances them
    by several tokens at once; a call with the same rows and the same prompt
    that does so is resynchronised row by row (matchers rolled back to the
    longest common prefix with what they consumed, then fed the rest). Any
    other call (another prompt, another number of rows, or a sequence no
    longer than the prompt) starts a new generation, so one processor can
    serve many ``generate()`` calls in turn. Use one processor per
    concurrent generation.
    """

    #: Continuous batching calls processors with a changing set of rows.
    supports_continuous_batching = False

    def __init__(
        self,
        constraint: _core.Constraint,
        *,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> None:
        if not isinstance(constraint, _core.Constraint):
            raise TypeError(
                f"constraint must be a tokensieve.Constraint (e.g. from tokensieve.compile_regex), "
                f"got {type(constraint).__name__}"
            )
        self.constraint = constraint
        self._vocab_size = int(constraint.vocab_size)
        self.eos_token_ids: Optional[List[int]] = None
        if eos_token_ids is not None:
            eos = [_int_arg(e, "eos_token_ids") for e in eos_token_ids]
            for e in eos:
                if not 0 <= e < self._vocab_size:
                    raise ValueError(f"EOS id {e} out of range for vocabulary size {self._vocab_size}")
            self.eos_token_ids = eos
        self.pad_token_id: Optional[int] = None if pad_token_id is None else _int_arg(pad_token_id, "pad_token_id")
        self.mask_times: List[float] = []
        self.reset()

    @classmethod
    def from_regex(
        cls,
        pattern: str,
        tokenizer: Any,
        vocab_size: Optional[int] = None,
        *,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> "LogitsProcessor":
        """Build a processor for ``pattern`` (full match, Rust regex syntax).

        Args:
            pattern: the regex every generated text must match (over its
                UTF-8 bytes, from the first generated token to EOS).
            tokenizer: a ``transformers`` *fast* tokenizer of the model.
            vocab_size: the width of the model's logits
                (``model.config.vocab_size``) when it exceeds the tokenizer.
            eos_token_ids: EOS ids, default the tokenizer's EOS (or, if it
                has none, the well-known end-of-text tokens of its vocabulary).
                Include every id in ``model.generation_config.eos_token_id``.
            pad_token_id: default ``tokenizer.pad_token_id``, else the
                first EOS id (as ``generate`` does).

        Raises:
            ValueError: invalid or too large pattern, or a pattern that no
                string of tokens can match.
            TypeError: ``tokenizer`` is not a fast tokenizer.
        """
        return cls._compile_for(lambda v: _core.compile_regex(pattern, v), tokenizer, vocab_size, eos_token_ids, pad_token_id)

    @classmethod
    def from_grammar(
        cls,
        grammar: str,
        tokenizer: Any,
        vocab_size: Optional[int] = None,
        *,
        syntax: str = "lark",
        start: Optional[str] = None,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> "LogitsProcessor":
        """Build a processor for a context-free grammar: ``syntax="lark"``
        (start rule ``start``) or ``"gbnf"`` (start rule ``root``); the
        other arguments as :meth:`from_regex`.

        Raises:
            ValueError: invalid or too large grammar.
            TypeError: ``tokenizer`` is not a fast tokenizer.
        """
        return cls._compile_for(
            lambda v: _core.compile_grammar(grammar, v, syntax=syntax, start=start),
            tokenizer, vocab_size, eos_token_ids, pad_token_id,
        )

    @classmethod
    def from_json(
        cls,
        tokenizer: Any,
        vocab_size: Optional[int] = None,
        *,
        whitespace: str = "flexible",
        max_depth: int = 64,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> "LogitsProcessor":
        """Build a processor for any JSON value (the built-in grammar, see
        :func:`tokensieve.compile_json`); the other arguments as
        :meth:`from_regex`."""
        return cls._compile_for(
            lambda v: _core.compile_json(v, whitespace=whitespace, max_depth=max_depth),
            tokenizer, vocab_size, eos_token_ids, pad_token_id,
        )

    @classmethod
    def from_json_schema(
        cls,
        schema: Any,
        tokenizer: Any,
        vocab_size: Optional[int] = None,
        *,
        whitespace: str = "flexible",
        separators: Optional[Tuple[str, str]] = None,
        strict: bool = True,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> "LogitsProcessor":
        """Build a processor for a JSON Schema (JSON text, a dict, or a
        pydantic model class; see :func:`tokensieve.compile_json_schema`);
        the other arguments as :meth:`from_regex`.

        Raises:
            ValueError: invalid schema, or (``strict=True``) a keyword that
                cannot be enforced exactly.
        """
        from .json_schema import compile_json_schema

        return cls._compile_for(
            lambda v: compile_json_schema(
                schema, v, whitespace=whitespace, separators=separators, strict=strict
            ),
            tokenizer, vocab_size, eos_token_ids, pad_token_id,
        )

    @classmethod
    def _compile_for(
        cls,
        compile: Callable[[_core.Vocabulary], _core.Constraint],
        tokenizer: Any,
        vocab_size: Any,
        eos_token_ids: Optional[Iterable[int]],
        pad_token_id: Optional[int],
    ) -> "LogitsProcessor":
        """The vocabulary of ``tokenizer`` (``vocab_size`` any int type, not
        below the tokenizer's), a constraint compiled against it, and EOS
        and pad ids as ``generate`` uses them."""
        eos = None if eos_token_ids is None else [_int_arg(e, "eos_token_ids") for e in eos_token_ids]
        size = None if vocab_size is None else _positive_int(vocab_size, "vocab_size")
        vocab = _core.Vocabulary.from_huggingface(tokenizer, eos_token_ids=eos, vocab_size=size)
        constraint = compile(vocab)
        eos = list(vocab.eos_token_ids)
        if pad_token_id is None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is None and eos:
            pad_token_id = eos[0]  # what generate() pads with when no pad id is set
        return cls(constraint, eos_token_ids=eos or None, pad_token_id=pad_token_id)

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget all rows; the next call starts a new generation.

        Not needed between ``generate()`` calls (a new one is detected), but
        harmless. Also clears :attr:`mask_times`.
        """
        self._matchers: List[_core.Matcher] = []
        self._finished: List[bool] = []
        self._bitmask: Optional[np.ndarray] = None
        self._prompt_length: Optional[int] = None
        self._prev_ids: Optional["torch.Tensor"] = None
        self._weights: Optional["torch.Tensor"] = None
        self._last_tokens: List[int] = []
        self._reordered = False  # rows were reordered (beam search)
        self.mask_times = []

    @property
    def matchers(self) -> List[_core.Matcher]:
        """The per-row matchers of the current generation (row order of ``input_ids``)."""
        return list(self._matchers)

    @property
    def finished(self) -> List[bool]:
        """Per row: whether it has ended (EOS consumed, or stopped and padded)."""
        return list(self._finished)

    @property
    def prompt_length(self) -> Optional[int]:
        """Length of ``input_ids`` (padded prompt) at the first call, or ``None`` before it."""
        return self._prompt_length

    @property
    def bitmask(self) -> Optional[np.ndarray]:
        """The int32 bitmask applied at the last step, shape ``(rows, ceil(vocab_size / 32))``."""
        return self._bitmask

    def _start(self, batch: int, length: int) -> None:
        self.reset()
        self._matchers = [_core.Matcher(self.constraint) for _ in range(batch)]
        self._finished = [False] * batch
        self._bitmask = allocate_token_bitmask(batch, self._vocab_size)
        self._prompt_length = length

    def _parents(self, input_ids: "torch.Tensor") -> Optional[List[int]]:
        """For each row, the row of the previous call that it extends by one token.

        ``None`` when this call does not continue the previous one (a new
        generation). Greedy search and sampling extend every row in place,
        checked with one comparison on the device; beam search reorders,
        duplicates and drops rows, which are then matched by their whole
        token history.
        """
        prev = self._prev_ids
        if prev is None or input_ids.shape[1] != prev.shape[1] + 1 or input_ids.device != prev.device:
            return None
        head = input_ids[:, :-1]
        if head.shape[0] == prev.shape[0] and torch.equal(head, prev):
            return list(range(prev.shape[0]))
        # Match rows by a hash computed on the device (only `rows` numbers
        # cross to the host), then confirm the whole histories at once.
        weights = self._hash_weights(head.shape[1], head.device)
        index = {k: j for j, k in enumerate((prev * weights).sum(-1).tolist())}
        found = [index.get(k) for k in (head * weights).sum(-1).tolist()]
        parents = [p for p in found if p is not None]
        if len(parents) != len(found) or not torch.equal(head, prev[parents]):
            return None
        return parents

    def _hash_weights(self, length: int, device: Any) -> "torch.Tensor":
        """Random odd int64 weights: ``(row * w).sum()`` (wrapping) tells rows apart."""
        w = self._weights
        if w is None or w.shape[0] < length or w.device != device:
            g = torch.Generator().manual_seed(0x70CE5)
            n = max(length, 2 * (0 if w is None else w.shape[0]), 64)
            w = torch.randint(-(2**62), 2**62, (n,), generator=g, dtype=torch.int64).mul_(2).add_(1).to(device)
            self._weights = w
        return w[:length]

    def _reorder(self, parents: List[int]) -> None:
        """Give row ``i`` the state of previous row ``parents[i]`` (copies where a row is reused)."""
        if parents == list(range(len(self._matchers))):
            return
        self._reordered = True
        taken = set()
        matchers = []
        for p in parents:
            m = self._matchers[p]
            matchers.append(m.copy() if p in taken else m)
            taken.add(p)
        self._matchers = matchers
        self._finished = [self._finished[p] for p in parents]
        self._last_tokens = [self._last_tokens[p] for p in parents]
        # Finished rows keep their EOS/pad-only mask; the others are refilled.
        self._bitmask = np.ascontiguousarray(self._rows()[parents])

    def _resync(self, input_ids: "torch.Tensor") -> bool:
        """Bring every row's matcher to the row's tokens after a rewind or a jump.

        Only for the same rows over the same prompt (assisted decoding);
        returns False, touching nothing, otherwise.
        """
        prev, plen = self._prev_ids, self._prompt_length
        if prev is None or plen is None or input_ids.device != prev.device:
            return False
        if input_ids.shape[0] != prev.shape[0] or input_ids.shape[1] <= plen:
            return False
        if not torch.equal(input_ids[:, :plen], prev[:, :plen]):
            return False
        step = int(input_ids.shape[1]) - plen
        last_tokens = input_ids[:, -1].tolist()
        for i, (new, old) in enumerate(zip(input_ids[:, plen:].tolist(), prev[:, plen:].tolist())):
            m = self._matchers[i]
            k = m.num_consumed  # the matcher has consumed old[:k]
            common = 0
            for a, b in zip(old[:k], new):
                if a != b:
                    break
                common += 1
            if self._finished[i] and common == k:
                continue  # a finished row, padded further
            if common < k:
                m.rollback(k - common)
                self._finished[i] = False
            for t in new[common:]:
                self._consume_one(i, t, step)
                if m.eos_consumed:
                    # What follows EOS is padding; _fill finishes the row.
                    last_tokens[i] = t
                    break
                if self._finished[i]:
                    break  # stopped elsewhere and padded
        self._last_tokens = last_tokens
        return True

    def _finish_row(self, i: int, token: Optional[int]) -> None:
        """Mark row ``i`` done; from now on only EOS/pad (and ``token``) are allowed, so no row is all -inf."""
        self._finished[i] = True
        allowed = set(self.eos_token_ids or ())
        if token is not None:
            allowed.add(token)
        if self.pad_token_id is not None:
            allowed.add(self.pad_token_id)
        row = self._rows().view(np.uint32)[i]
        row[:] = 0
        for t in allowed:
            if 0 <= t < self._vocab_size:
                row[t >> 5] |= np.uint32(1 << (t & 31))

    def _consume(self, tokens: List[int], step: int) -> None:
        for i, t in enumerate(tokens):
            if self._finished[i]:
                continue  # transformers pads finished rows
            self._consume_one(i, t, step)

    def _consume_one(self, i: int, t: int, step: int) -> None:
        m = self._matchers[i]
        ok = 0 <= t < self._vocab_size and m.consume_token(t)
        if not ok:
            if self.pad_token_id is not None and t == self.pad_token_id:
                # Stopped by some other stopping criterion and now padded.
                self._finish_row(i, None)
                return
            if self._reordered and _OLD_BEAM_SEARCH:
                # A beam whose score is -inf, extended anyway by the beam
                # search of transformers < 4.50: it can never be returned;
                # it stays finished (EOS / pad only).
                self._finish_row(i, None)
                return
            raise RuntimeError(
                f"tokensieve.hf.LogitsProcessor: row {i} generated token {t} at step {step}, "
                f"which its constraint does not allow (after {m.num_consumed} consumed tokens). "
                "Is another logits processor or warper changing scores after this one, "
                "or is the processor shared between concurrent generations?"
            )

    def _rows(self) -> np.ndarray:
        """The bitmask, allocated by the first call."""
        if self._bitmask is None:
            raise RuntimeError("tokensieve.hf.LogitsProcessor: no bitmask before the first call")
        return self._bitmask

    def _fill(self) -> None:
        bm = self._rows()
        if not any(self._finished):
            _core.fill_next_token_bitmasks(self._matchers, bm)
        else:
            rows = [i for i, f in enumerate(self._finished) if not f]
            if rows:
                _core.fill_next_token_bitmasks([self._matchers[i] for i in rows], bm, rows)
        # Rows that just consumed EOS (their mask allows only EOS again).
        for i, m in enumerate(self._matchers):
            if not self._finished[i] and m.eos_consumed:
                self._finish_row(i, self._last_tokens[i])
        # Rows with no allowed token (finished rows always allow EOS/pad).
        for i in np.flatnonzero(np.bitwise_or.reduce(bm, axis=1) == 0).tolist():
            m = self._matchers[i]
            if not m.is_terminated():
                raise RuntimeError(
                    f"tokensieve.hf.LogitsProcessor: no token can continue row {i} after "
                    f"{m.num_consumed} generated tokens: the constraint needs text that no "
                    "token of the vocabulary spells"
                )
            # Terminated with an empty mask: EOS was just consumed (or the text
            # is complete and the vocabulary has no EOS token to end it).
            last = self._last_tokens[i]
            if m.num_consumed == 0 or (self.eos_token_ids is not None and last not in self.eos_token_ids):
                raise RuntimeError(
                    f"tokensieve.hf.LogitsProcessor: the text of row {i} is complete and "
                    "nothing may follow, but the vocabulary has no EOS token to end it; "
                    "give the Vocabulary eos_token_ids"
                )
            self._finish_row(i, last)

    # ---------------------------------------------------------------- calling

    def __call__(self, input_ids: "torch.LongTensor", scores: "torch.FloatTensor") -> "torch.FloatTensor":
        """Consume each row's newest token and mask ``scores`` in place.

        Args:
            input_ids: ``(rows, length)`` token ids so far (prompt included).
            scores: ``(rows, V)`` float logits for the next token,
                ``V >= constraint.vocab_size`` typically.

        Returns:
            ``scores``, with disallowed tokens set to ``-inf``.

        Raises:
            RuntimeError: a row generated a token its constraint forbids.
        """
        t0 = time.perf_counter()
        if input_ids.dim() != 2 or scores.dim() != 2 or scores.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"expected input_ids (rows, length) and scores (rows, vocab), got "
                f"{tuple(input_ids.shape)} and {tuple(scores.shape)}"
            )
        parents = self._parents(input_ids)
        if parents is None:
            if not self._resync(input_ids):
                self._start(int(input_ids.shape[0]), int(input_ids.shape[1]))
                self._last_tokens = input_ids[:, -1].tolist()
        else:
            self._reorder(parents)
            new = input_ids[:, -1].tolist()
            self._last_tokens = new
            self._consume(new, int(input_ids.shape[1]) - (self._prompt_length or 0))
        # generate() builds a new ids tensor every step, but beam search may
        # write into a buffer it hands out as a view: keep our own copy.
        self._prev_ids = input_ids.detach().clone()
        self._fill()
        bm = self._rows()
        covered = bm.shape[1] * 32
        if scores.shape[1] > covered:  # embedding rows past the vocabulary: never allowed
            scores[:, covered:] = float("-inf")
            apply_token_bitmask_inplace(scores[:, :covered], bm)
        else:
            apply_token_bitmask_inplace(scores, bm)
        self.mask_times.append(time.perf_counter() - t0)
        return scores

    def __repr__(self) -> str:
        return (
            f"LogitsProcessor({self.constraint!r}, rows={len(self._matchers)}, "
            f"finished={sum(self._finished)})"
        )
