"""The hot modules, compiled to C extensions by mypyc from their own typed source (``make native``,
which ``make install`` runs), and which of them this process runs compiled.

The source stays the one implementation: a module without its extension (no compiler, or
``PROCESSOR_COMPILE=0``) runs as Python, with the same results; the tests compare the two.
"""

from __future__ import annotations

import importlib
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec, SourceFileLoader
from importlib.util import spec_from_file_location
from pathlib import Path

#: Decode, fold, duplicate window, ADL peak window, encode and the handler: the per-fill path.
HOT_MODULES = (
    "processor.codec.decoding",
    "processor.codec.encoding",
    "processor.domain.drawdown",
    "processor.domain.events",
    "processor.domain.fold",
    "processor.domain.ledger",
    "processor.domain.record",
    "processor.domain.state",
    "processor.pipeline",
)
#: The mypyc runtime shared by the compiled modules (one extension beside them).
GROUP_NAME = "processor._native"
#: The decoder's scanner, written in C (built with the compiled modules; msgspec scans without it).
SCANNER = "processor.codec._scan"
SCANNER_SOURCE = "processor/codec/_scan.c"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def source_path(module: str, root: Path = PACKAGE_ROOT) -> Path:
    return root / (module.replace(".", "/") + ".py")


def compiled_modules() -> list[str]:
    """The hot modules this process imported as C extensions."""
    compiled = []
    for name in HOT_MODULES:
        location = getattr(importlib.import_module(name), "__file__", None) or ""
        if location.endswith(tuple(EXTENSION_SUFFIXES)):
            compiled.append(name)
    return compiled


def scanner_built() -> bool:
    """Whether the decoder's native scanner is built (``make native``)."""
    try:
        importlib.import_module(SCANNER)
    except ImportError:
        return False
    return True


def stale_extensions(root: Path = PACKAGE_ROOT) -> list[str]:
    """Hot modules (and the scanner) whose extension is older than their source: Python would import
    the extension, so an edit of the source would not run until ``make native`` compiles it again."""
    stale = []
    sources = [(name, source_path(name, root)) for name in HOT_MODULES]
    sources.append((SCANNER, root / SCANNER_SOURCE))
    for name, source in sources:
        if not source.exists():
            continue
        for suffix in EXTENSION_SUFFIXES:
            extension = source.with_name(source.stem + suffix)
            if extension.exists() and extension.stat().st_mtime < source.stat().st_mtime:
                stale.append(name)
    return stale


def describe() -> str:
    """One line for benchmarks and logs: which hot modules run compiled."""
    compiled = compiled_modules()
    scanner = "native scanner" if scanner_built() else "msgspec scanner (the native one is not built)"
    if len(compiled) == len(HOT_MODULES):
        return f"hot modules compiled by mypyc, {scanner}"
    if not compiled:
        return f"hot modules interpreted (not compiled: `make native`), {scanner}"
    return f"hot modules partly compiled: {', '.join(compiled)}; {scanner}"


class _SourceFinder(MetaPathFinder):
    """Find the hot modules' source ahead of their extensions."""

    def find_spec(self, name: str, path: object, target: object = None) -> ModuleSpec | None:
        if name not in HOT_MODULES:
            return None
        source = source_path(name)
        return spec_from_file_location(name, source, loader=SourceFileLoader(name, str(source)))


def import_from_source() -> None:
    """Make this process import the hot modules as Python (``PROCESSOR_PURE=1``): the reference the
    compiled modules are compared with, and a way to rule the compiler out."""
    if not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SourceFinder())
