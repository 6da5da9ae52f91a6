from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from ._core import Vocabulary

@runtime_checkable
class LanguageModel(Protocol):
    def start(self, prompt_ids: Sequence[int], n: int) -> Any: ...
    def next_logprobs(self, state: Any, last_tokens: Optional[Any]) -> Any: ...
    def reorder(self, state: Any, rows: Any) -> Any: ...

def reorder_past_key_values(past: Any, rows: Any) -> Any: ...

class HFState:
    past_key_values: Any
    rows: int
    length: int
    pending: Any

class HFModel:
    model: Any
    bos_token_id: Optional[int]
    device: Any
    def __init__(self, model: Any, *, bos_token_id: Optional[int] = None) -> None: ...
    def start(self, prompt_ids: Sequence[int], n: int) -> HFState: ...
    def next_logprobs(self, state: HFState, last_tokens: Optional[Any]) -> Any: ...
    def reorder(self, state: HFState, rows: Any) -> HFState: ...

def as_language_model(model: Any) -> Any: ...
def keep_large_allocations(threshold_bytes: int = ...) -> bool: ...

class TableState:
    prefixes: List[Tuple[int, ...]]
    started: bool

NextProbs = Callable[[Tuple[int, ...]], Sequence[float]]

class TableLM:
    token_bytes: List[Optional[bytes]]
    vocab_size: int
    eos_token_id: int
    max_len: Optional[int]
    vocabulary: Vocabulary
    def __init__(
        self,
        token_bytes: Sequence[Optional[bytes]],
        next_probs: NextProbs,
        eos_token_id: int,
        *,
        max_len: Optional[int] = None,
        dtype: Any = None,
    ) -> None: ...
    @classmethod
    def bigram(
        cls,
        token_bytes: Sequence[Optional[bytes]],
        initial: Sequence[float],
        transition: Any,
        eos_token_id: int,
        *,
        max_len: Optional[int] = None,
    ) -> "TableLM": ...
    def probs(self, prefix: Sequence[int]) -> np.ndarray: ...
    def text(self, tokens: Sequence[int]) -> bytes: ...
    def sequences(
        self,
        *,
        max_len: Optional[int] = None,
        prefix_ok: Optional[Callable[[bytes], bool]] = None,
        min_prob: float = 0.0,
    ) -> Iterator[Tuple[Tuple[int, ...], float]]: ...
    def start(self, prompt_ids: Sequence[int], n: int) -> TableState: ...
    def next_logprobs(self, state: TableState, last_tokens: Optional[Any]) -> Any: ...
    def reorder(self, state: TableState, rows: Any) -> TableState: ...
