"""``python -m klhuber`` is the ``klhuber`` command."""

import sys

from klhuber.cli import main

sys.exit(main())
