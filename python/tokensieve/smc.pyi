from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple, Union

import numpy as np

from ._core import Constraint, Vocabulary

RESAMPLERS: Tuple[str, ...]
LIVE: int
EOS: int
MAX_TOKENS: int
DEAD: int

class SMCResult:
    token_ids: List[List[int]]
    text_bytes: List[bytes]
    texts: List[str]
    status: List[str]
    log_weights: np.ndarray
    weights: np.ndarray
    log_z: float
    log_z_complete: float
    ess: List[float]
    resampled: List[bool]
    num_steps: int
    n_particles: int
    timings: Dict[str, float]
    @property
    def complete(self) -> np.ndarray: ...
    @property
    def z(self) -> float: ...
    def posterior(self, *, complete_only: bool = False, as_bytes: bool = False) -> Dict[Any, float]: ...
    def best(self) -> Optional[str]: ...
    def overhead_per_step(self) -> float: ...

def generate(
    model: Any,
    tokenizer: Any,
    prompt: Union[str, Sequence[int], None],
    constraint: Union[Constraint, str],
    *,
    n_particles: int = 32,
    ess_threshold: float = 0.5,
    resampler: str = "systematic",
    max_new_tokens: int = 64,
    seed: Optional[int] = None,
    vocab: Optional[Vocabulary] = None,
    profile: bool = False,
) -> SMCResult: ...
def masked_decode(
    model: Any,
    tokenizer: Any,
    prompt: Union[str, Sequence[int], None],
    constraint: Union[Constraint, str],
    *,
    n_samples: int = 32,
    max_new_tokens: int = 64,
    seed: Optional[int] = None,
    vocab: Optional[Vocabulary] = None,
) -> SMCResult: ...
def format_result(result: SMCResult, *, top: int = 10) -> str: ...
def print_result(result: SMCResult, *, top: int = 10, file: Optional[TextIO] = None) -> None: ...
