"""``python -m dataflows.cli`` = the ``fraud`` command (tests and tools run it this way)."""

import sys

from dataflows.cli import main

sys.exit(main())
