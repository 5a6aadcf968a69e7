"""Build the hot modules (``processor.native.HOT_MODULES``) as C extensions with mypyc, and the
decoder's scanner (``processor/codec/_scan.c``).

Only when asked (``PROCESSOR_COMPILE=1``, as ``make native`` does, with the virtualenv's mypy): a
plain ``pip install .`` builds the pure-Python package, which gives the same results, slower.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))


def extensions() -> list:  # type: ignore[type-arg]
    if os.environ.get("PROCESSOR_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    from processor.native import GROUP_NAME, HOT_MODULES, SCANNER, SCANNER_SOURCE, source_path

    paths = [str(source_path(name).relative_to(Path.cwd())) for name in HOT_MODULES]
    scanner = Extension(SCANNER, [SCANNER_SOURCE], extra_compile_args=["-O3"])
    return [*mypycify(paths, group_name=GROUP_NAME, opt_level="3", debug_level="0"), scanner]


setup(ext_modules=extensions())
