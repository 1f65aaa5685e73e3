"""The acknowledgement protocol, sans-IO (see ``docs/protocol.md``).

Upstream sends event frames; downstream answers on the same connection with
ack frames, length-prefixed like events, each a JSON object::

    {"ack": N}                                   frames 1..N of this connection are settled
    {"ack": N, "rejected": [[K, "reason"], ...]}  ... and frame K was refused (K may be > N)

Frames are numbered from 1 on each connection. "Settled" means durably taken
downstream, or refused for good (re-sending the same bytes cannot help), or a
duplicate of an event already taken. Acks are cumulative, so downstream may
coalesce or skip them; each refusal is reported once, possibly before the
cumulative count reaches it.

:class:`Outbox` is the upstream's bookkeeping: items taken but not yet settled,
in order, with how many of them went out on the current connection.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from ..errors import FramingError
from ..model import cut

__all__ = ["MAX_REJECTED", "Ack", "Outbox", "ack_payloads", "decode_ack", "encode_ack"]

#: at most this many rejections ride on one ack (the rest are only counted)
MAX_REJECTED = 64
#: characters of a refusal's reason an ack carries at most (a longer one is cut, and ends in "…")
_MAX_REASON = 200

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ack:
    count: int
    rejected: tuple[tuple[int, str], ...] = ()


def encode_ack(ack: Ack) -> bytes:
    obj: dict[str, Any] = {"ack": ack.count}
    if ack.rejected:
        obj["rejected"] = [[n, cut(r, _MAX_REASON)] for n, r in ack.rejected[:MAX_REJECTED]]
    return orjson.dumps(obj)


def ack_payloads(count: int, rejected: Sequence[tuple[int, str]]) -> list[bytes]:
    """The acks that say frames up to ``count`` are settled and report ``rejected``: one, or one per
    :data:`MAX_REJECTED` refusals, the count of each stopping short of any refusal only a later one reports (an
    upstream takes what a count covers, and no refusal named, as delivered)."""
    if not rejected:
        return [encode_ack(Ack(count))]
    out = []
    for i in range(0, len(rejected), MAX_REJECTED):
        later = rejected[i + MAX_REJECTED :]
        upto = min(count, min(n for n, _r in later) - 1) if later else count
        out.append(encode_ack(Ack(upto, tuple(rejected[i : i + MAX_REJECTED]))))
    return out


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def decode_ack(payload: bytes) -> Ack:
    """Parse one ack payload; anything malformed is a FramingError."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise FramingError(f"ack is not JSON: {exc}") from None
    if not isinstance(obj, dict) or not _is_int(obj.get("ack")) or obj["ack"] < 0:
        raise FramingError("ack frame without a non-negative integer 'ack'")
    raw = obj.get("rejected", [])
    if not isinstance(raw, list) or len(raw) > MAX_REJECTED:
        raise FramingError("ack 'rejected' is not a short list")
    rejected: list[tuple[int, str]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and _is_int(item[0]) and isinstance(item[1], str)):
            raise FramingError("ack 'rejected' entries must be [frame number, reason]")
        rejected.append((item[0], item[1]))
    return Ack(obj["ack"], tuple(rejected))


class _Entry(Generic[T]):
    """One queued item; compared by identity, so equal payloads stay distinct."""

    __slots__ = ("item", "refused")

    def __init__(self, item: T) -> None:
        self.item = item
        self.refused = False


class Outbox(Generic[T]):
    """Unsettled items in order, and what the current connection has carried of them."""

    __slots__ = ("_acked", "_conn", "_items", "_sent")

    def __init__(self) -> None:
        self._items: deque[_Entry[T]] = deque()
        #: entries at the front of ``_items`` already written on the current connection
        self._sent = 0
        #: frames of the current connection settled so far (the last cumulative ack)
        self._acked = 0
        #: frames ``_acked + 1 ...`` of this connection, in order (refused-early ones stay as placeholders)
        self._conn: deque[_Entry[T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def in_flight(self) -> int:
        """Written on this connection and not yet settled."""
        return self._sent

    @property
    def unsent(self) -> int:
        return len(self._items) - self._sent

    def add(self, items: Iterable[T]) -> None:
        self._items.extend(_Entry(i) for i in items)

    def take_all(self) -> list[T]:
        """Every unsettled item, in order, taken away (refused ones are settled already): for a sender that
        stopped and hands what it held to another."""
        items = [e.item for e in self._items if not e.refused]
        self._items.clear()
        self._conn.clear()
        self._sent = self._acked = 0
        return items

    def reconnected(self) -> None:
        """A new connection: everything unsettled goes out again, numbered from 1."""
        self._sent = 0
        self._acked = 0
        self._conn.clear()

    def take_unsent(self, limit: int) -> list[T]:
        """Up to ``limit`` items not yet written on this connection; they count as written."""
        start = self._sent
        n = min(limit, len(self._items) - start)
        if n <= 0:
            return []
        entries = list(itertools.islice(self._items, start, start + n))
        self._conn.extend(entries)
        self._sent += n
        return [e.item for e in entries]

    def settle(self, ack: Ack) -> tuple[list[T], list[tuple[T, str]]]:
        """Apply an ack: the items it settles, and the refused ones (with reasons).

        Refusals may name frames beyond ``ack.count``: those items are settled
        at once (and never sent again) though earlier frames are still open.
        An ack that goes backwards or names frames never sent is a FramingError.
        """
        n = ack.count - self._acked
        if n < 0 or n > len(self._conn):
            raise FramingError(f"ack {ack.count} outside the window ({self._acked}..{self._acked + len(self._conn)})")
        reasons: dict[int, str] = {}
        for k, r in ack.rejected:
            if not self._acked < k <= self._acked + len(self._conn):
                raise FramingError(f"refusal of frame {k} outside the window")
            reasons[k] = r
        done: list[T] = []
        refused: list[tuple[T, str]] = []
        conn, items = self._conn, self._items
        for k in range(self._acked + 1, ack.count + 1):
            entry = conn.popleft()
            if entry.refused:
                continue  # settled when its refusal came
            items.popleft()
            self._sent -= 1
            reason = reasons.pop(k, None)
            if reason is None:
                done.append(entry.item)
            else:
                refused.append((entry.item, reason))
        self._acked = ack.count
        for k, reason in reasons.items():  # refused ahead of the cumulative ack
            if k <= self._acked:
                continue  # a repeated notice for a frame refused early and now passed
            entry = conn[k - self._acked - 1]
            if not entry.refused:
                entry.refused = True
                items.remove(entry)
                self._sent -= 1
                refused.append((entry.item, reason))
        return done, refused
