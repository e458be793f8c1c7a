"""``python -m training.cli`` (and ``torchrun -m training.cli``): the ``slotfill`` command."""

import sys

from . import main

sys.exit(main())
