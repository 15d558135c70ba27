"""``python -m tarstream``: the ``tarstream`` command."""

import sys

from .cli import main

sys.exit(main())
