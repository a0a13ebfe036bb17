"""CPU per `POST /generate` request through the ASGI app in process, without sockets or uvicorn.

Why: on a shared machine wrk's images/s and even the server's CPU per request move by +-10% from
run to run, more than one framework layer costs. Called in process, with the same 1-image bodies
as bench/generate.lua and 32 requests in flight, the app's CPU per request (the event-loop thread's
alone, and the whole process's with the codec and inference threads) is steadier; run it on two
checkouts alternately and compare the minima:

    python bench/bench_asgi_cpu.py --model-repo bench/.work/models-null            # this checkout
    (cd <other checkout> && python <this file> --model-repo ...)                   # the one it imports

The app is the checkout's `service.app.create_app` (whichever `service` the working directory
holds), with the garbage collector set as a serving process sets it (`memory.tune_gc`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout under test is the working directory's


def _scope(body: bytes) -> dict[str, Any]:
    """What uvicorn hands the app for one request of bench/generate.lua."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "scheme": "http", "method": "POST",
        "root_path": "", "path": "/generate", "raw_path": b"/generate", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "state": {},
    }  # fmt: skip


async def _request(app: Any, body: bytes) -> int:
    """One request; like uvicorn, `receive` blocks after the body until the response is complete."""
    done = asyncio.Event()
    first = True
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body"):
            done.set()

    await app(_scope(body), receive, send)
    return status


async def _measure(model_repo: Path, requests: int, in_flight: int, rounds: int) -> None:
    from service import memory
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(model_dir=model_repo, device="cpu", access_log=False, max_batch_delay_ms=5, model_poll_s=0)
    app = create_app(settings)
    memory.tune_gc()
    seed = 0

    async def client(count: int) -> None:
        nonlocal seed
        for _ in range(count):
            seed += 1
            status = await _request(app, b'{"num_images": 1, "seed": %d}' % seed)
            if status != 200:
                raise RuntimeError(f"status {status}")

    async with app.router.lifespan_context(app):
        await app.state.service.warmup
        await asyncio.gather(*(client(100) for _ in range(in_flight)))  # warm-up
        each = max(1, requests // in_flight)
        for index in range(rounds):
            cpu0, loop0 = time.process_time(), time.thread_time()
            await asyncio.gather(*(client(each) for _ in range(in_flight)))
            cpu, loop_cpu = time.process_time() - cpu0, time.thread_time() - loop0
            n = each * in_flight
            print(f"round {index + 1}: event loop {1e6 * loop_cpu / n:.0f} us, process {1e6 * cpu / n:.0f} us "
                  f"of CPU per request ({n} requests)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repo", type=Path, required=True, help="repository with a `generate` model")
    parser.add_argument("--requests", type=int, default=6000, help="requests per round")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(_measure(args.model_repo, args.requests, args.in_flight, args.rounds))
    else:
        uvloop.run(_measure(args.model_repo, args.requests, args.in_flight, args.rounds))


if __name__ == "__main__":
    main()
