"""A lipogram: text without the letter "e", from a plain lambda.

The constraint is one line of Python (no grammar, no regex)::

    potentials=[lambda s: b"e" not in s.lower()]

SMC with adaptive weighted rejection sampling (AWRS) asks the function
only about the tokens the model proposes, a handful per step instead of
the 50,257 of GPT-2's vocabulary, and the weights make the particles a
sample of the model *conditioned* on the constraint (not of the
"masked" model).

    python examples/lipogram.py                   # tiny random GPT-2, offline
    python examples/lipogram.py --model PATH      # a local model
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import load_model, parser, report  # noqa: E402

from tokensieve import smc  # noqa: E402

PROMPT = "A story without that symbol:"


def main(argv: Optional[Sequence[str]] = None) -> smc.SMCResult:
    args = parser(__doc__.splitlines()[0], max_new_tokens=16).parse_args(argv)
    model, tok, vocab = load_model(args.model, args.seed, args.layers)
    res = smc.generate(
        model, tok, PROMPT,
        potentials=[lambda s: b"e" not in s.lower()],
        sampler=args.sampler, n_particles=args.particles, max_new_tokens=args.max_new_tokens,
        seed=args.seed, vocab=vocab,
    )
    report(res, extra=[f"vocabulary size |V| = {vocab.vocab_size}"])
    return res


if __name__ == "__main__":
    main()
