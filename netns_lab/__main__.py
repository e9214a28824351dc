"""``python -m netns_lab ...``: the same commands as the invoke tasks."""

import sys

from netns_lab.cli import main

sys.exit(main())
