"""`python -m pengi`: the `pengi` command."""

import sys

from pengi.cli import main

if __name__ == "__main__":  # imported again, not run, by decoding processes (spawned)
    sys.exit(main())
