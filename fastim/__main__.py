"""``python -m fastim``: the same as the ``fastim`` console script."""

import sys

from fastim.cli import main

if __name__ == "__main__":
    sys.exit(main())
