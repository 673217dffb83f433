"""`python -m printfleet` is the same as the `printfleet` console script."""

import sys

from printfleet.cli import main

sys.exit(main())
