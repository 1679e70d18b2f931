"""``python -m raynn``: the same as the ``raynn`` command."""

from raynn.cli import entry

entry()
