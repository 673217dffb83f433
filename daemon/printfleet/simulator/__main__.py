"""``python -m printfleet.simulator`` is ``printfleet simulate``."""

from printfleet.simulator.cli import main

raise SystemExit(main())
