"""``python -m trainer``: the command line of the Stride library."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
