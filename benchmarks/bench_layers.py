"""Layer benchmark table, the same as `convnet bench`; `--help` lists the options."""

from convnet._blas_core import use_fast_core
from convnet.bench import main

if __name__ == "__main__":
    use_fast_core()
    raise SystemExit(main())
