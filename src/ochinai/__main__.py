"""``python -m ochinai``."""

import sys

from ochinai.entry import main

sys.exit(main())
