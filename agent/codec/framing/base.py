"""What both framing decoders share: the buffer, the broken state, and draining frames."""

from __future__ import annotations

from abc import ABC, abstractmethod

from ...errors import FramingError

__all__ = ["BufferedDecoder"]


class BufferedDecoder(ABC):
    """A byte buffer with a read position; subclasses find frames in it."""

    __slots__ = ("_buf", "_error", "_pos", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as frames."""
        return len(self._buf) - self._pos

    @property
    def broken(self) -> bool:
        return self._error is not None

    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the peer to stop)."""
        return self.buffered == 0

    def feed(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        if self._error is not None:
            raise self._error
        if self._pos:
            self._compact(self._pos)
        self._buf += data

    def _compact(self, n: int) -> None:
        del self._buf[:n]
        self._pos = 0

    def _fail(self, msg: str) -> FramingError:
        """Enter the broken state and drop the buffer; the caller raises what this returns."""
        self._error = FramingError(msg)
        self._buf = bytearray()
        self._pos = 0
        return self._error

    @abstractmethod
    def next_frame(self) -> bytes | None:
        """The next complete payload, or ``None`` until more bytes arrive."""

    def frames(self) -> list[bytes]:
        """Every complete payload buffered now. At a bad frame, raises FramingError whose
        ``frames`` attribute holds the good payloads that came before it."""
        out: list[bytes] = []
        while True:
            try:
                f = self.next_frame()
            except FramingError as exc:
                exc.frames = out  # type: ignore[attr-defined]
                raise
            if f is None:
                return out
            out.append(f)
