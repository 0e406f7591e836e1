"""Build the compiled im2col/col2im kernel, or fall back to a pure-Python install.

The Cython compiler directives and the OpenMP detection live here, in one place.
Set ``CONVNET_REQUIRE_EXTENSION=1`` to make a failed compilation an error.
"""

import os
import sys
import tempfile

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

OPENMP_TEST_PROGRAM = """
#include <omp.h>
int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
"""


def _require_extension() -> bool:
    return os.environ.get("CONVNET_REQUIRE_EXTENSION", "") not in ("", "0")


def _openmp_flags(compiler) -> list[str]:
    """Return the flag that enables OpenMP for this compiler, or [] if it has none."""
    candidates = ["/openmp"] if compiler.compiler_type == "msvc" else ["-fopenmp"]
    for flag in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "omp_test.c")
            with open(source, "w") as handle:
                handle.write(OPENMP_TEST_PROGRAM)
            try:
                objects = compiler.compile([source], output_dir=tmp, extra_postargs=[flag])
                compiler.link_executable(objects, "omp_test", output_dir=tmp, extra_postargs=[flag])
            except Exception:
                continue
        return [flag]
    return []


class OptionalBuildExt(build_ext):
    """Compile with OpenMP where available; on failure, install without the extension."""

    def build_extensions(self) -> None:
        try:
            flags = _openmp_flags(self.compiler)
        except Exception:
            flags = []
        openmp = "on" if flags else "off"
        print(f"convnet: building the compiled kernel with OpenMP {openmp}", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args += flags
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args += ["-O3"]
                ext.extra_link_args += flags
        super().build_extensions()

    def run(self) -> None:
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
        if _require_extension():
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


extensions = [
    Extension(
        "convnet._im2col",
        ["convnet/_im2col.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_25_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives=COMPILER_DIRECTIVES),
    cmdclass={"build_ext": OptionalBuildExt},
)
