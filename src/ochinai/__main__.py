"""``python -m ochinai``."""

import sys

from ochinai.cli import main

sys.exit(main())
