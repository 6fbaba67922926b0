"""`python -m metadt ...` (and `torchrun -m metadt ...`) runs the command line."""
from metadt.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
