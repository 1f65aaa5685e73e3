"""The duplicate window: bounded, remembers pending copies, forgets failed ones."""

from __future__ import annotations

import asyncio

from agent.receiver import DedupeWindow


def test_bounded_and_oldest_first() -> None:
    async def main() -> None:
        w = DedupeWindow(3)
        loop = asyncio.get_running_loop()
        for i in range(5):
            f = loop.create_future()
            f.set_result(True)
            w.add(("s", str(i)), f)
        await asyncio.sleep(0)
        assert len(w) == 3
        assert ("s", "1") not in w
        assert ("s", "4") in w
        assert w.get(("s", "4")) is None  # done copies keep no future

    asyncio.run(main())


def test_pending_copy_is_returned_and_failed_copy_forgotten() -> None:
    async def main() -> None:
        w = DedupeWindow(10)
        loop = asyncio.get_running_loop()
        ok, bad = loop.create_future(), loop.create_future()
        w.add(("s", "ok"), ok)
        w.add(("s", "bad"), bad)
        assert w.get(("s", "ok")) == (ok, -1)  # its future, answering for it alone
        ok.set_result(True)
        bad.set_exception(RuntimeError("sink down"))
        await asyncio.sleep(0)
        assert w.get(("s", "ok")) is None
        assert ("s", "bad") not in w

    asyncio.run(main())


def test_size_zero_disables() -> None:
    async def main() -> None:
        w = DedupeWindow(0)
        w.add(("s", "1"), asyncio.get_running_loop().create_future())
        assert ("s", "1") not in w

    asyncio.run(main())


def test_a_copy_that_already_failed_is_not_remembered() -> None:
    async def main() -> None:
        w = DedupeWindow(10)
        f = asyncio.get_running_loop().create_future()
        f.set_exception(RuntimeError("down"))
        w.add(("s", "x"), f)
        assert ("s", "x") not in w

    asyncio.run(main())


def test_a_dropped_copy_is_forgotten_so_its_resend_is_not_acked_as_taken() -> None:
    """A copy the pipeline dropped (result False) was never taken: a re-sent copy must be offered again."""

    async def main() -> None:
        w = DedupeWindow(10)
        loop = asyncio.get_running_loop()
        later, already = loop.create_future(), loop.create_future()
        already.set_result(False)
        w.add(("s", "already"), already)
        w.add(("s", "later"), later)
        later.set_result(False)
        await asyncio.sleep(0)
        assert ("s", "already") not in w
        assert ("s", "later") not in w

    asyncio.run(main())


def test_a_batch_answer_decides_each_copy_by_its_position() -> None:
    """One future for a batch: taken copies stay (settled), dropped and refused ones are forgotten."""

    async def main() -> None:
        w = DedupeWindow(10)
        batch = asyncio.get_running_loop().create_future()
        keys = [("c", "s", str(i)) for i in range(4)]
        w.add_many(keys, batch)
        assert [w.get(k) for k in keys] == [(batch, i) for i in range(4)]
        batch.set_result([True, False, ValueError("bad time"), True])
        await asyncio.sleep(0)
        assert [k in w for k in keys] == [True, False, False, True]
        assert w.get(keys[0]) is None and w.get(keys[3]) is None

    asyncio.run(main())


def test_a_batch_taken_whole_is_remembered_whole() -> None:
    async def main() -> None:
        w = DedupeWindow(10)
        batch = asyncio.get_running_loop().create_future()
        batch.set_result(None)
        w.add_many([("c", "s", "1"), ("c", "s", "2")], batch)
        assert w.get(("c", "s", "1")) is None and w.get(("c", "s", "2")) is None

    asyncio.run(main())


def test_a_copy_offered_again_is_the_newest_entry_not_the_next_to_go() -> None:
    """Its first delivery was dropped; the copy's own delivery must not be the first thing the window forgets."""

    async def main() -> None:
        w = DedupeWindow(3)
        loop = asyncio.get_running_loop()
        dropped = loop.create_future()
        dropped.set_result(False)
        w.add(("c", "s", "k"), dropped)
        for i in range(2):
            f = loop.create_future()
            f.set_result(True)
            w.add(("c", "s", str(i)), f)
        again = loop.create_future()
        w.add(("c", "s", "k"), again)  # the resend, pending
        f = loop.create_future()
        f.set_result(True)
        w.add(("c", "s", "2"), f)  # one more: the oldest goes, which is "0", not "k"
        assert ("c", "s", "k") in w and ("c", "s", "0") not in w
        assert w.get(("c", "s", "k")) == (again, -1)

    asyncio.run(main())
