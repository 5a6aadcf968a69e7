# The decoder's native scanner (_scan.c), built with the compiled modules.
from typing import Any

class Scanner:
    def __init__(
        self,
        names: tuple[bytes, ...],
        choices: tuple[tuple[str, ...] | None, ...],
        recurring: tuple[bool, ...],
        layout: tuple[int | bytes, ...],
    ) -> None: ...
    def scan(self, data: bytes) -> tuple[Any, ...] | None: ...
