"""``python -m drossel``: the same command line as ``drossel``."""

import sys

from drossel.cli.main import main

sys.exit(main())
