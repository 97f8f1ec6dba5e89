"""`python -m pengi.cli`: the `pengi` command."""

import sys

from pengi.cli import main

sys.exit(main())
