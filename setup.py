"""Build the compiled im2col/col2im kernel, or fall back to a pure-Python install.

The Cython compiler directives live here, in one place. The kernel is single-threaded
C (the fast layers run it from one worker thread per core), so it needs no OpenMP.
Set ``CONVNET_REQUIRE_EXTENSION=1`` to make a failed compilation an error (a flag read by
the rule of every ``CONVNET_*`` variable, ``convnet/_environment.py``: ``1``, ``true``,
``yes``, ``on`` or ``0``, ``false``, ``no``, ``off``, empty meaning off; any other value
stops the build). Every build first deletes the kernel a previous build
left in ``build/`` (and, with ``--inplace``, beside the sources): when compilation fails,
no stale kernel can be installed or imported in its place.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
}


def _load_environment_rules():
    """convnet/_environment.py, loaded by path: the package itself is not built yet."""
    path = Path(__file__).resolve().parent / "convnet" / "_environment.py"
    spec = importlib.util.spec_from_file_location("convnet_environment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


try:
    REQUIRE_EXTENSION = _load_environment_rules().require_extension()
except ValueError as bad_value:
    sys.exit(f"error: {bad_value}")


class OptionalBuildExt(build_ext):
    """Compile with full optimization; on failure, install without the extension."""

    def build_extensions(self) -> None:
        for ext in self.extensions:
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args += ["-O3"]
        super().build_extensions()

    def _stale_outputs(self, ext: Extension) -> list[Path]:
        """The kernel files and object files an earlier build may have left."""
        inplace = self.inplace
        paths = [Path(self.get_ext_fullpath(ext.name))]  # in place with --inplace
        try:
            self.inplace = False
            paths.append(Path(self.get_ext_fullpath(ext.name)))  # under build/
        finally:
            self.inplace = inplace
        objects = Path(self.build_temp).glob("**/" + ext.name.rsplit(".", 1)[-1] + ".*")
        return [*paths, *objects]

    def run(self) -> None:
        for ext in self.extensions:
            for stale in self._stale_outputs(ext):
                if stale.is_file():
                    stale.unlink()
        try:
            super().run()
        except Exception as error:
            self._give_up(error)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        if REQUIRE_EXTENSION:
            raise error
        message = (
            "\n"
            "************************************************************\n"
            "convnet: the compiled kernel could not be built:\n"
            f"    {error}\n"
            "convnet is installed WITHOUT it and will use the slow naive\n"
            "layers. Install a C compiler and the Python headers, then\n"
            "reinstall (set CONVNET_REQUIRE_EXTENSION=1 to make this fatal).\n"
            "************************************************************\n"
        )
        print(message, file=sys.stderr)


# Each extension and the headers it includes (their changes rebuild it).
EXTENSIONS = {
    "_im2col": [
        "convnet/_simd.h",
        "convnet/_max_pool.h",
        "convnet/_max_pool_impl.h",
        "convnet/_depthwise_taps.h",
        "convnet/_depthwise_taps_impl.h",
    ],
    "_winograd": ["convnet/_simd.h", "convnet/_winograd_tiles.h", "convnet/_winograd_tiles_impl.h"],
    "_batchnorm": [
        "convnet/_simd.h",
        "convnet/_batchnorm_channels.h",
        "convnet/_batchnorm_channels_impl.h",
    ],
    "_relu": [],
    "_channels_last": [
        "convnet/_simd.h",
        "convnet/_cl_kernels.h",
        "convnet/_cl_filters_impl.h",
        "convnet/_cl_im2col.h",
        "convnet/_cl_isa.h",
        "convnet/_cl_threads.h",
        "convnet/_cl_isa_portable.h",
        "convnet/_cl_isa_avx2.h",
        "convnet/_cl_isa_avx512.h",
        "convnet/_cl_isa_end.h",
        "convnet/_cl_kernels_impl.h",
        "convnet/_cl_gemm_impl.h",
        "convnet/_cl_winograd_impl.h",
        "convnet/_cl_im2col_impl.h",
        "convnet/_cl_norm_impl.h",
        "convnet/_cl_pooling_impl.h",
    ],
}
extensions = [
    Extension(
        f"convnet.{name}",
        [f"convnet/{name}.pyx"],
        include_dirs=[np.get_include(), "convnet"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION")],
        depends=headers,
    )
    for name, headers in EXTENSIONS.items()
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES),
    cmdclass={"build_ext": OptionalBuildExt},
)
