"""``python -m pi2lab.cli``, the same as the ``pi2lab`` command."""

import sys

from pi2lab.cli import main

sys.exit(main())
