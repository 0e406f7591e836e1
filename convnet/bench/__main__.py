"""``python -m convnet.bench``: the same as ``convnet bench``."""

from convnet.bench import main

raise SystemExit(main())
