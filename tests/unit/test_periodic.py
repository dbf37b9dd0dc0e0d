"""Periodic: rounds every tick, back-to-back on a full batch, overlapping when allowed."""

from __future__ import annotations

import asyncio

from src.processing.periodic import Periodic


async def _run_for(worker: Periodic, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_full_batch_is_followed_at_once_by_another_round():
    works = iter([5, 5, 5, 0])
    calls = []

    async def round_() -> int:
        calls.append(1)
        return next(works, 0)

    await _run_for(Periodic("t", round_, tick_seconds=10, batch=5), 0.2)
    assert len(calls) == 4  # three full batches back-to-back, then it waits for the tick


async def test_a_failing_round_does_not_stop_the_loop():
    calls = []

    async def round_() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return 0

    await _run_for(Periodic("t", round_, tick_seconds=0.05, batch=5), 0.3)
    assert len(calls) >= 2


async def test_a_slow_round_does_not_hold_up_the_next_when_rounds_may_overlap():
    started = []
    release = asyncio.Event()

    async def round_() -> int:
        started.append(asyncio.get_running_loop().time())
        if len(started) == 1:
            await release.wait()  # an Export API call hanging until its timeout
        return 0

    worker = Periodic("t", round_, tick_seconds=0.05, batch=5, parallel_rounds=2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)
    assert len(started) >= 2  # the second round ran while the first still hung
    stop.set()
    await asyncio.sleep(0.1)
    assert not task.done()  # stopping waits for the round still running
    release.set()
    await asyncio.wait_for(task, 5)


async def test_one_round_at_a_time_by_default():
    running = []
    overlap = []

    async def round_() -> int:
        running.append(1)
        overlap.append(len(running))
        await asyncio.sleep(0.05)
        running.pop()
        return 0

    await _run_for(Periodic("t", round_, tick_seconds=0.01, batch=5), 0.3)
    assert overlap and max(overlap) == 1


async def test_an_idle_worker_backs_off_to_its_idle_tick_and_work_brings_it_back():
    works = iter([0, 0, 0, 0, 0, 3])

    async def round_() -> int:
        return next(works)

    worker = Periodic("t", round_, tick_seconds=1, batch=5, idle_tick_seconds=5)
    ticks = []
    for _ in range(6):
        await worker._guarded()
        ticks.append(worker._next_tick())
    assert ticks == [2, 4, 5, 5, 5, 1]


async def test_without_an_idle_tick_the_tick_stays():
    async def round_() -> int:
        return 0

    worker = Periodic("t", round_, tick_seconds=1, batch=5)
    await worker._guarded()
    assert worker._next_tick() == 1
