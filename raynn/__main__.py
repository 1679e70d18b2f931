"""``python -m raynn``: the same as the ``raynn`` command."""

import sys

from raynn.cli import main

sys.exit(main())
