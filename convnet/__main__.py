"""``python -m convnet``: the ``convnet`` command (see :mod:`convnet.cli`)."""

import sys

from convnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
