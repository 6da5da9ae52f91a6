"""``python -m tokensieve``: the same as the ``tokensieve`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
