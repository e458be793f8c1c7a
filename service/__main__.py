"""``python -m service --model DIR [--host H] [--port P] [--workers N]``."""

import sys

from .main import main

sys.exit(main())
