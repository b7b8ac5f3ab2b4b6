"""Where a trivial job's time goes: each way a client can wait for it, the floors beside them (a
bare loopback HTTP round trip, a RabbitMQ publish-and-consume round trip), the per-hop breakdown
the services record (`GET /api/jobs/<id>/timings`), and throughput with many clients at once."""
from __future__ import annotations

import http.server
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pika
import requests

from nias.settings import load_settings
from nias.timeline import ORDER
from tests.support.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms, p95 {percentile(values, 0.95) * 1000:7.1f} ms"


def _downloadable(stack: LocalStack, job_id: str) -> None:
    response = stack.client.session.get(f"{stack.url}/api/jobs/{job_id}/result", timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"bench job {job_id}: result answered {response.status_code}")


def _by_polling(stack: LocalStack, job_id: str) -> None:
    while stack.client.job(job_id)["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.005)


def _by_long_poll(stack: LocalStack, job_id: str) -> None:
    stack.client.job(job_id, wait_s=30, until_final=True)


def _by_client_wait(stack: LocalStack, job_id: str) -> None:
    stack.client.wait(job_id, timeout_s=60)


STRATEGIES = {"polling every 5 ms": _by_polling, "GET ?wait_s=30&until=final": _by_long_poll,
              "NiasClient.wait": _by_client_wait}


def time_wait_strategies(stack: LocalStack, project: Path, runs: int) -> dict[str, list[float]]:
    """Upload to result downloadable, per way of waiting; the runs of each strategy interleaved."""
    client = stack.client
    client.wait(client.submit(project)["id"], timeout_s=120)  # warm-up
    timings: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    for _ in range(runs):
        for name, wait in STRATEGIES.items():
            started = time.perf_counter()
            job = client.submit(project)
            wait(stack, job["id"])
            _downloadable(stack, job["id"])
            timings[name].append(time.perf_counter() - started)
    return timings


def time_cli_submits(stack: LocalStack, project: Path, runs: int) -> list[float]:
    """`nias submit --wait` as a researcher runs it: a new process each time (its start included)."""
    env = {**os.environ, "NIAS_URL": stack.url, "NIAS_TOKEN": stack.admin_token}
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(ROOT / ".venv" / "bin" / "nias"), "submit", str(project), "--wait"], env=env,
                       check=True, capture_output=True)
        timings.append(time.perf_counter() - started)
    return timings


def time_python_start(runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import nias.cli"], check=True)
        timings.append(time.perf_counter() - started)
    return timings


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()  # headers and body leave in two writes: without this, a delayed ACK adds 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - the handler's name is http.server's
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args) -> None:
        return


def time_loopback_http(runs: int) -> list[float]:
    """A bare HTTP round trip on loopback with a kept-alive connection: the floor of each hop."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    session, url = requests.Session(), f"http://127.0.0.1:{server.server_address[1]}/"
    session.get(url)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        session.get(url)
        timings.append(time.perf_counter() - started)
    server.shutdown()
    return timings


def time_broker_round_trip(runs: int) -> list[float]:
    """A persistent message published with confirms to a durable queue and consumed back: the floor
    of the queue hop."""
    connection = pika.BlockingConnection(pika.URLParameters(load_settings().amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    queue = f"nias-bench-floor-{os.getpid()}"
    channel.queue_declare(queue, durable=True)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        channel.basic_publish("", queue, b"x", pika.BasicProperties(delivery_mode=2))
        while channel.basic_get(queue, auto_ack=True)[0] is None:
            pass
        timings.append(time.perf_counter() - started)
    channel.queue_delete(queue)
    connection.close()
    return timings


def hop_breakdown(stack: LocalStack, project: Path, runs: int) -> dict[str, list[float]]:
    """Per hop, the milliseconds since the hop before it, over `runs` trivial jobs."""
    client = stack.client
    hops: dict[str, list[float]] = {hop.value: [] for hop in ORDER[1:]}
    for _ in range(runs):
        job = client.wait(client.submit(project)["id"], timeout_s=60)
        timings = client.session.get(f"{stack.url}/api/jobs/{job['id']}/timings", timeout=10).json()
        for row in timings["hops"]:
            if row["ms"] is not None:
                hops[row["hop"]].append(row["ms"])
    return hops


def time_throughput(stack: LocalStack, project: Path, jobs: int, clients: int = 8) -> float:
    """Jobs per second until every result is downloadable, `clients` threads submitting at once."""
    def one(_: int) -> None:
        job = stack.client.submit(project)
        stack.client.wait(job["id"], timeout_s=600)
        _downloadable(stack, job["id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(jobs)))
    return jobs / (time.perf_counter() - started)
