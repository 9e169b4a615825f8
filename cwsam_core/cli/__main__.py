"""``python -m cwsam_core.cli``: the ``cwsam`` command."""

import sys

from . import main

sys.exit(main())
