"""Build the Cython kernels in ext/.

Every ``ext/*.pyx`` becomes ``ext.<name>``. ``CATHLAB_NATIVE=1`` adds ``-march=native`` for a
source build on the appliance itself; the default stays portable.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

flags = ["-O3"]
if os.environ.get("CATHLAB_NATIVE") == "1":
    flags.append("-march=native")

extensions = [
    Extension(
        f"ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[numpy.get_include()],
        extra_compile_args=flags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted(Path("ext").glob("*.pyx"))
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
