"""``python -m wan_desktop``: the ``wan-desktop`` command (what ``torchrun -m wan_desktop`` runs)."""

import sys

from .cli import main

sys.exit(main())
