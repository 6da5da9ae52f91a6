"""Type stubs for :mod:`tokensieve.hf`."""

from typing import Any, ClassVar, Iterable, List, Optional

import numpy as np
import torch
from transformers import LogitsProcessor as _HFLogitsProcessor

from ._core import Constraint, Matcher

__all__ = ["LogitsProcessor"]

class LogitsProcessor(_HFLogitsProcessor):
    """Mask the logits of ``model.generate`` so that the output follows a constraint."""

    supports_continuous_batching: ClassVar[bool]
    constraint: Constraint
    eos_token_ids: Optional[List[int]]
    pad_token_id: Optional[int]
    mask_times: List[float]

    def __init__(
        self,
        constraint: Constraint,
        *,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> None: ...
    @classmethod
    def from_regex(
        cls,
        pattern: str,
        tokenizer: Any,
        vocab_size: Optional[int] = None,
        *,
        eos_token_ids: Optional[Iterable[int]] = None,
        pad_token_id: Optional[int] = None,
    ) -> "LogitsProcessor": ...
    def reset(self) -> None: ...
    @property
    def matchers(self) -> List[Matcher]: ...
    @property
    def finished(self) -> List[bool]: ...
    @property
    def prompt_length(self) -> Optional[int]: ...
    @property
    def bitmask(self) -> Optional[np.ndarray]: ...
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor: ...
