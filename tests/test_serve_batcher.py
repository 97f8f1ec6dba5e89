"""The dynamic batcher on its own: batch sizes, waiting, grouping by key, failure isolation, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")

from pengi.serving.batcher import Batcher, run_isolated  # noqa: E402
from pengi.serving.errors import APIError  # noqa: E402


class Recorder:
    """A fake model: records each call's key and payloads, answers payload * 10, can be slow or fail."""

    def __init__(self, delay: float = 0.0, fail_on: object = None):
        self.calls: list[tuple[object, list]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.threads: set[int] = set()

    def __call__(self, key, payloads):
        self.threads.add(threading.get_ident())
        self.calls.append((key, list(payloads)))
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in payloads:
            raise RuntimeError("boom")
        return [p * 10 for p in payloads]


def run(coro):
    return asyncio.run(coro)


async def started(recorder, **kwargs) -> tuple[Batcher, ThreadPoolExecutor]:
    """A batcher whose batches run on one thread, isolated as the model process runs them."""
    pool = ThreadPoolExecutor(1)

    async def run_batch(key, payloads):
        return await asyncio.get_running_loop().run_in_executor(pool, run_isolated, recorder, key, payloads)

    batcher = Batcher(run_batch, **kwargs)
    batcher.start()
    return batcher, pool


def test_a_burst_is_served_in_full_batches_in_order():
    rec = Recorder(delay=0.05)

    async def main():
        batcher, pool = await started(rec, max_batch_size=4, max_wait_s=0.05)
        results = await asyncio.gather(*(batcher.submit("k", i) for i in range(10)))
        await batcher.close()
        pool.shutdown()
        return results

    assert run(main()) == [i * 10 for i in range(10)]
    assert [len(p) for _, p in rec.calls] == [4, 4, 2]
    assert [p for _, p in rec.calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(rec.threads) == 1  # one model thread


def test_a_lone_request_waits_at_most_max_wait():
    rec = Recorder()

    async def main():
        batcher, pool = await started(rec, max_batch_size=32, max_wait_s=0.2)
        t = time.monotonic()
        out = await batcher.submit("k", 1)
        waited = time.monotonic() - t
        await batcher.close()
        pool.shutdown()
        return out, waited

    out, waited = run(main())
    assert out == 10
    assert 0.15 < waited < 1.0


def test_a_lone_request_starts_at_once_when_nothing_else_is_arriving():
    rec = Recorder()
    arriving = {"n": 0}

    async def main():
        batcher, pool = await started(rec, max_batch_size=32, max_wait_s=5.0, arriving=lambda: arriving["n"])
        t = time.monotonic()
        out = await batcher.submit("k", 1)
        waited = time.monotonic() - t
        arriving["n"] = 1  # one more is on its way: the next batch waits for it (up to max_wait_s)
        first = batcher.submit_many("k", [2])
        await asyncio.sleep(0.2)
        assert not first[0].done()
        second = batcher.submit_many("k", [3])
        arriving["n"] = 0
        batcher.poke()
        both = await asyncio.gather(first[0], second[0])
        await batcher.close()
        pool.shutdown()
        return out, waited, both

    out, waited, both = run(main())
    assert out == 10 and waited < 1.0
    assert both == [20, 30] and [p for _, p in rec.calls] == [[1], [2, 3]]


def test_after_a_batch_its_clients_are_waited_for():
    """Clients of a finished batch usually ask again at once: the first of them waits (up to max_wait_s) for the
    others instead of starting a batch of one; one client asking again and again never waits."""
    rec = Recorder()

    async def main():
        batcher, pool = await started(rec, max_batch_size=8, max_wait_s=0.3, arriving=lambda: 0)
        t = time.monotonic()
        for i in range(3):  # one client, request after request
            await batcher.submit("k", i)
        one_client = time.monotonic() - t
        assert await asyncio.gather(*(batcher.submit("k", i) for i in range(3, 6))) == [30, 40, 50]
        first = batcher.submit_many("k", [6])  # one of those three comes back ...
        await asyncio.sleep(0.1)
        assert not first[0].done()  # ... and waits for the other two
        rest = batcher.submit_many("k", [7, 8])
        out = await asyncio.gather(first[0], *rest)
        await batcher.close()
        pool.shutdown()
        return one_client, out

    one_client, out = run(main())
    assert one_client < 0.3  # three requests, none of them waited max_wait_s
    assert out == [60, 70, 80] and [p for _, p in rec.calls][-1] == [6, 7, 8]


def test_requests_with_other_settings_get_their_own_batches():
    rec = Recorder()

    async def main():
        batcher, pool = await started(rec, max_batch_size=8, max_wait_s=0.05)
        futures = [batcher.submit("greedy" if i % 2 else "beam", i) for i in range(8)]
        out = await asyncio.gather(*futures)
        await batcher.close()
        pool.shutdown()
        return out

    assert run(main()) == [i * 10 for i in range(8)]
    assert sorted((k, tuple(p)) for k, p in rec.calls) == [("beam", (0, 2, 4, 6)), ("greedy", (1, 3, 5, 7))]


def test_one_failing_input_fails_alone():
    rec = Recorder(fail_on=3)

    async def main():
        batcher, pool = await started(rec, max_batch_size=8, max_wait_s=0.05)
        out = await asyncio.gather(*(batcher.submit("k", i) for i in range(6)), return_exceptions=True)
        await batcher.close()
        pool.shutdown()
        return out

    out = run(main())
    assert [o for i, o in enumerate(out) if i != 3] == [0, 10, 20, 40, 50]
    assert isinstance(out[3], APIError) and out[3].status == 500 and "RuntimeError" in out[3].message
    assert [len(p) for _, p in rec.calls] == [6, 1, 1, 1, 1, 1, 1]  # the batch, then each input alone


def test_cancelled_requests_are_dropped_and_close_drains_the_queue():
    rec = Recorder(delay=0.05)

    async def main():
        batcher, pool = await started(rec, max_batch_size=2, max_wait_s=0.0)
        futures = batcher.submit_many("k", list(range(6)))
        futures[5].cancel()
        await asyncio.sleep(0)
        await batcher.close()  # returns only when every queued input is answered
        pool.shutdown()
        return futures

    futures = run(main())
    assert [f.result() for f in futures[:5]] == [0, 10, 20, 30, 40]
    assert 5 not in [p for _, ps in rec.calls for p in ps]


def test_a_full_queue_refuses_with_503():
    rec = Recorder(delay=0.2)

    async def main():
        batcher, pool = await started(rec, max_batch_size=1, max_wait_s=0.0, max_queue=3)
        first = batcher.submit_many("k", [1, 2, 3])
        with pytest.raises(APIError) as err:
            batcher.submit_many("k", [4])
        await asyncio.gather(*first)
        await batcher.close()
        pool.shutdown()
        return err.value

    err = run(main())
    assert err.status == 503 and err.code == "overloaded"
