"""The batcher on its own (no HTTP): merging, splitting, grouping, bounds, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from service.batching import (
    Batcher,
    DeadlineExceeded,
    InferenceFailed,
    QueueFull,
)
from service.metrics import Metrics


class Recorder:
    """A fake model: output row = input row * 2; records each batch; can be held by an event."""

    def __init__(self) -> None:
        self.batches: list[dict[str, tuple[int, ...]]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.batches.append({name: arr.shape for name, arr in feeds.items()})
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("boom")
        return next(iter(feeds.values())) * 2


def run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_fn(), timeout=30))


def make(model: Recorder, **kwargs: Any) -> Batcher:
    options = {"max_batch_size": 8, "max_batch_delay_s": 0.02, "max_queue_rows": 64} | kwargs
    batcher = Batcher("m", model, **options)
    batcher.start()
    return batcher


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.001)


def rows(start: int, count: int, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.arange(start * width, (start + count) * width, dtype=np.float32).reshape(count, width)}


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=0.5)
        inputs = [rows(i * 10, 1 + i % 2) for i in range(5)]  # 1,2,1,2,1 rows = 7 < 8
        results = await asyncio.gather(*(batcher.infer(feeds) for feeds in inputs))
        for feeds, out in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(out, feeds["x"] * 2)
        assert batcher.runs == 1 and batcher.rows_run == 7
        await batcher.close()

    run(main)
    assert model.batches == [{"x": (7, 3)}]


def test_full_batch_runs_without_waiting_for_the_delay() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=60.0)
        results = await asyncio.gather(*(batcher.infer(rows(i, 1)) for i in range(8)))
        assert len(results) == 8 and batcher.runs == 1
        await batcher.close()

    run(main)


def test_large_request_is_split_and_reassembled_in_order() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = make(model)
        big = rows(0, 19)
        small = rows(100, 2)
        out_big, out_small = await asyncio.gather(batcher.infer(big), batcher.infer(small))
        np.testing.assert_array_equal(out_big, big["x"] * 2)
        np.testing.assert_array_equal(out_small, small["x"] * 2)
        await batcher.close()

    run(main)
    # 19 rows -> 8 + 8 + (3 + the small request's 2)
    assert [b["x"][0] for b in model.batches] == [8, 8, 5]


def test_different_shapes_never_share_a_batch() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=0.2)
        a = {"x": np.ones((2, 3), np.float32)}
        b = {"x": np.ones((1, 5), np.float32)}
        c = {"x": np.full((1, 3), 3, np.float32)}
        out_a, out_b, out_c = await asyncio.gather(batcher.infer(a), batcher.infer(b), batcher.infer(c))
        assert out_a.shape == (2, 3) and out_b.shape == (1, 5) and out_c.shape == (1, 3)
        np.testing.assert_array_equal(out_c, c["x"] * 2)
        await batcher.close()

    run(main)
    assert sorted(b["x"] for b in model.batches) == [(1, 5), (3, 3)]


def test_full_queue_rejects_at_once() -> None:
    model = Recorder()
    model.release.clear()
    metrics = Metrics()

    async def main() -> None:
        batcher = make(model, max_queue_rows=4, max_batch_size=2, metrics=metrics)
        first = asyncio.ensure_future(batcher.infer(rows(0, 2)))
        await until(model.entered.is_set)  # running: its rows left the queue
        queued = asyncio.ensure_future(batcher.infer(rows(0, 4)))
        await until(lambda: batcher.queued_rows == 4)
        with pytest.raises(QueueFull):
            await batcher.infer(rows(0, 1))
        model.release.set()
        await asyncio.gather(first, queued)
        await batcher.close()

    run(main)
    assert metrics.rejections.labels("m", "queue_full")._value.get() == 1


def test_expired_request_is_dropped_without_compute() -> None:
    model = Recorder()
    model.release.clear()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=0.0)
        first = asyncio.ensure_future(batcher.infer(rows(0, 1)))
        await until(model.entered.is_set)
        with pytest.raises(DeadlineExceeded):
            await batcher.infer(rows(5, 3), timeout=0.05)
        assert batcher.queued_rows == 0  # its slot was freed at the deadline
        model.release.set()
        await first
        await asyncio.sleep(0.05)
        assert batcher.runs == 1 and batcher.rows_run == 1
        await batcher.close()

    run(main)


def test_cancelled_request_frees_its_slot_and_is_not_computed() -> None:
    model = Recorder()
    model.release.clear()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=0.0)
        first = asyncio.ensure_future(batcher.infer(rows(0, 1)))
        await until(model.entered.is_set)
        doomed = asyncio.ensure_future(batcher.infer(rows(5, 3)))
        await until(lambda: batcher.queued_rows == 3)
        doomed.cancel()
        await asyncio.sleep(0)
        assert batcher.queued_rows == 0
        model.release.set()
        await first
        await asyncio.sleep(0.05)
        assert batcher.rows_run == 1
        await batcher.close()

    run(main)


def test_a_cancelled_request_leaves_the_queue_at_once() -> None:
    """What the service's disconnect watcher relies on: cancelling `infer` frees the job's rows."""
    model = Recorder()
    model.release.clear()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=0.0)
        first = asyncio.ensure_future(batcher.infer(rows(0, 1)))
        await until(model.entered.is_set)
        doomed = asyncio.ensure_future(batcher.infer(rows(5, 2)))
        await until(lambda: batcher.queued_rows == 2)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert batcher.queued_rows == 0
        model.release.set()
        await first
        assert batcher.rows_run == 1
        await batcher.close()

    run(main)


def test_inference_error_fails_the_batch_but_not_the_worker() -> None:
    model = Recorder()

    async def main() -> None:
        batcher = make(model, max_batch_delay_s=0.0)
        model.fail = True
        with pytest.raises(InferenceFailed):
            await batcher.infer(rows(0, 1))
        model.fail = False
        out = await batcher.infer(rows(1, 1))
        np.testing.assert_array_equal(out, rows(1, 1)["x"] * 2)
        await batcher.close()

    run(main)


def test_multi_input_jobs_concatenate_every_input() -> None:
    seen: list[tuple[int, ...]] = []

    def model(feeds: dict[str, np.ndarray]) -> np.ndarray:
        seen.append(feeds["label"].shape)
        return feeds["image"] + feeds["label"].sum(axis=1)[:, None, None, None]

    async def main() -> None:
        batcher = Batcher("t", model, max_batch_size=8, max_batch_delay_s=0.2, max_queue_rows=16)
        batcher.start()
        jobs = [
            {"image": np.full((n, 3, 2, 2), i, np.float32), "label": np.full((n, 2), i, np.float32)}
            for i, n in ((1, 1), (2, 3))
        ]
        outs = await asyncio.gather(*(batcher.infer(job) for job in jobs))
        np.testing.assert_array_equal(outs[0], np.full((1, 3, 2, 2), 1 + 2, np.float32))
        np.testing.assert_array_equal(outs[1], np.full((3, 3, 2, 2), 2 + 4, np.float32))
        await batcher.close()

    run(main)
    assert seen == [(4, 2)]


def test_two_streams_compute_two_batches_at_once_and_reassemble_split_jobs() -> None:
    """With streams=2 a second batch starts while the first is held; a job split over both comes
    back in row order even when its second part finishes first."""
    first_in = threading.Event()
    hold_first = threading.Event()
    calls: list[int] = []

    def model(feeds: dict[str, np.ndarray]) -> np.ndarray:
        x = feeds["x"]
        calls.append(len(x))
        if len(calls) == 1:
            first_in.set()
            assert hold_first.wait(10)  # the first batch finishes last
        return x * 2

    async def main() -> None:
        batcher = Batcher("m", model, max_batch_size=8, max_batch_delay_s=0.0, max_queue_rows=64, streams=2)
        batcher.start()
        big = rows(0, 12)  # 8 rows in the held batch, 4 in the next one
        task = asyncio.ensure_future(batcher.infer(big))
        await until(lambda: len(calls) == 2)  # the second batch ran although the first is held
        assert first_in.is_set() and not task.done()
        hold_first.set()
        np.testing.assert_array_equal(await task, big["x"] * 2)
        await batcher.close()

    run(main)
    assert calls == [8, 4]


def test_finish_runs_once_per_batch_on_the_finish_executor() -> None:
    model = Recorder()
    finish_threads: list[str] = []
    handoffs: list[str] = []

    class CountingPool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            handoffs.append(fn.__name__)
            return super().submit(fn, *args, **kwargs)

    def finish(out: np.ndarray) -> bytes:
        finish_threads.append(threading.current_thread().name)
        if out[0, 0] < 0:
            raise ValueError("cannot encode")
        return out.tobytes()

    async def main() -> None:
        pool = CountingPool(1, thread_name_prefix="codec")
        batcher = make(model, max_batch_delay_s=0.2, finish_executor=pool)
        inputs = [rows(i * 10, 1) for i in range(4)] + [{"x": -np.ones((1, 3), np.float32)}]
        results = await asyncio.gather(*(batcher.infer(f, finish=finish) for f in inputs), return_exceptions=True)
        for feeds, result in zip(inputs[:4], results[:4], strict=True):
            assert result == (feeds["x"] * 2).tobytes()
        assert isinstance(results[4], ValueError)  # only the job whose finish failed
        await batcher.close()
        pool.shutdown()

    run(main)
    assert len(model.batches) == 1 and handoffs == ["_finish_all"]
    assert len(finish_threads) == 5 and all(name.startswith("codec") for name in finish_threads)
