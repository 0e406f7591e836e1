"""The ``convnet`` command's entry point, for the console script and ``python -m convnet``.

Before running :func:`convnet.cli.main` it lets :func:`convnet._blas_core.use_fast_core`
re-execute the process with OpenBLAS's AVX-512 kernels where numpy's OpenBLAS chose AVX2
ones on an AVX-512 CPU (and the user set no ``OPENBLAS_CORETYPE``). A library import
never does this; only the processes convnet owns do.
"""

import sys

from convnet._blas_core import use_fast_core


def main() -> int:
    """Run the ``convnet`` command with ``sys.argv``; return its exit status."""
    use_fast_core()
    from convnet.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
