"""``python -m tinygrad_conv train ...``: the command line (see ``tinygrad_conv.cli``)."""

import sys

from .cli import main

sys.exit(main())
