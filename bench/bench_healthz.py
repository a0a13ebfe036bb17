"""Event-loop responsiveness: `/healthz` latency while 12 clients send maximum-size `/generate` bodies
(issue 13: p99 < 100 ms; before, 9.9 MB bodies parsed on the loop stalled it for seconds).

Each client (a thread of a separate sender process, so the probe never waits for their GIL) sends, on
a keep-alive connection, a `/generate` body of as many 100-value latent vectors as fit in
`--body-bytes` (default: this checkout's `/generate` body cap for the DCGAN benchmark model, the largest
body it accepts), over and over for `--duration` s. The probe, in this process, GETs `/healthz` every
20 ms on its own connection and reports the latency percentiles.

    python bench/bench_healthz.py [--clients 12] [--duration 20] [--body-bytes N]
    python bench/bench_healthz.py --service-root /tmp/before --body-bytes 9900000
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_generate import loadavg  # noqa: E402
from bench.serving import ROOT, start_server, stop_server  # noqa: E402
from service.admission import generate_body_limit  # noqa: E402
from service.settings import Settings  # noqa: E402

LATENT_DIM = 100


def body_of(size: int) -> bytes:
    vector = "[" + ",".join(["-1.2345678901234567e-05"] * LATENT_DIM) + "]"
    count = max(1, (size - 20) // (len(vector) + 1))
    return ('{"latents":[' + ",".join([vector] * count) + "]}").encode()


def _sender(port: int, body: bytes, until: float, statuses: dict[int, int], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    while time.time() < until:
        try:
            conn.request("POST", "/generate", body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            status = response.status
            if response.getheader("connection", "").lower() == "close":
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
            status = 0
        with lock:
            statuses[status] = statuses.get(status, 0) + 1


def senders(port: int, body: bytes, clients: int, until: float, out: multiprocessing.Queue) -> None:
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=_sender, args=(port, body, until, statuses, lock)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put(statuses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--body-bytes", type=int, help="default: this checkout's /generate body cap")
    parser.add_argument("--port", type=int, default=8773)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    parser.add_argument("--service-root", type=Path, default=ROOT, help="checkout whose service/ is measured")
    args = parser.parse_args(argv)
    settings = Settings()
    size = args.body_bytes or generate_body_limit(settings.max_images_per_request, [LATENT_DIM],
                                                  settings.max_upload_bytes)
    body = body_of(size)
    load_before = loadavg()
    proc = start_server(args.work / "models", args.port, args.work / "server-healthz.log", args.service_root)
    try:
        until = time.time() + args.duration
        results: multiprocessing.Queue = multiprocessing.Queue()
        sender = multiprocessing.Process(target=senders, args=(args.port, body, args.clients, until, results))
        sender.start()
        time.sleep(1.0)  # let the clients start
        probe = http.client.HTTPConnection("127.0.0.1", args.port, timeout=60)
        latencies = []
        while time.time() < until - 0.5:
            began = time.perf_counter()
            probe.request("GET", "/healthz")
            response = probe.getresponse()
            response.read()
            latencies.append((time.perf_counter() - began) * 1e3)
            assert response.status == 200
            time.sleep(0.02)
        statuses = results.get(timeout=300)
        sender.join()
    finally:
        stop_server(proc)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    result = {
        "service_root": str(args.service_root),
        "body_bytes": len(body),
        "clients": args.clients,
        "probes": len(latencies),
        "healthz_p50_ms": round(statistics.median(latencies), 2),
        "healthz_p99_ms": round(p99, 2),
        "healthz_max_ms": round(latencies[-1], 2),
        "sender_statuses": statuses,
        "load_before": load_before,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
