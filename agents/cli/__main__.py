"""``python -m agents.cli``: the same as the ``optimizer`` command."""

import sys

from agents.cli import main

sys.exit(main())
