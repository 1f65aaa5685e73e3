"""``python -m agent`` is ``hoststamp``."""

import sys

from .cli import main

sys.exit(main())
