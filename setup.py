"""Build the Cython kernels in ext/, and put the protocol document beside the C kit in the wheel.

Every ``ext/*.pyx`` becomes ``ext.<name>``. ``CATHLAB_NATIVE=1`` adds ``-march=native`` for a
source build on the appliance itself; the default stays portable.

The C kit's README points vendors to the protocol document. Its one source is docs/serial-protocol.md
(shipped in the sdist by MANIFEST.in); every build copies it to firmware_bridge/c/serial-protocol.md in
the build tree, so the wheel's copy is always the document it was built with and no second copy is kept
in git to drift.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

flags = ["-O3"]
if os.environ.get("CATHLAB_NATIVE") == "1":
    flags.append("-march=native")

pyx_sources = sorted(Path("ext").glob("*.pyx"))
if not pyx_sources:
    # A wheel without the kernels would install and then fail on import: refuse to build it.
    raise SystemExit("setup.py: no ext/*.pyx found (an sdist without them cannot build the kernels)")

extensions = [
    Extension(
        f"ext.{pyx.stem}",
        [str(pyx)],
        include_dirs=[numpy.get_include()],
        extra_compile_args=flags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in pyx_sources
]

PROTOCOL_DOC = Path("docs", "serial-protocol.md")
KIT_COPY = Path("firmware_bridge", "c", "serial-protocol.md")


class BuildPyWithProtocolDoc(build_py):
    """build_py, plus the protocol document copied from docs/ into the C kit of the build tree."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install runs from the checkout, where docs/ is
            return
        target = Path(self.build_lib, KIT_COPY)
        self.mkpath(str(target.parent))
        self.copy_file(str(PROTOCOL_DOC), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if not self.editable_mode:
            outputs.append(str(Path(self.build_lib, KIT_COPY)))
        return outputs


setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_py": BuildPyWithProtocolDoc},
)
