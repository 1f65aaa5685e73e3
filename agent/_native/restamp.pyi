from collections.abc import Callable
from typing import Any

class Restamper:
    def __init__(self, shapes: dict[Any, Any], texts: dict[str, bytes], next_seq: Callable[[str], int]) -> None: ...
    def stamp(
        self, event: Any, seq: int | None, head: bytes, host_json: bytes, /
    ) -> tuple[bytes, bytes, bytes, str, str, Any, int] | None: ...

def check_passes(event: Any, /) -> bool: ...
