"""Load test of `pengi serve`: C concurrent clients against the running server vs the same clips offline.

    python -m perf.serve_load --clients 1 8 32 64        # from the repository root

1. Offline baseline: the clips (1 s WAV files) through ``model.generate(paths, prompt, batch_size=B)`` in this
   process, B = ``--max-batch-size`` (the largest batch the server may form) and B = all clips in one call.
2. The server: started here as a subprocess (``pengi serve`` with the same model, device, dtype and threads, as the
   tests start it: `tests.serving_utils.ServerProcess`), then,
   for each C, C clients each sending chat completions (base64 WAV, the openai schema) one after another until
   ``--requests`` answers (at least 4 C) have come back. Every answer is checked against the offline one.
3. Printed per C: throughput, its ratio to the offline throughput and to the server's own one-client throughput,
   p50/p95 latency, and the batch sizes the server formed (from /metrics, ``pengi_batch_size``).

The clients are a minimal keep-alive HTTP/1.1 client on asyncio in this process (the load generator should not be
what limits the server on a small machine); they share the machine's cores with the server, as a client on the
same host would. The server is started with ``--max-wait-ms`` (default 10) and ``--max-batch-size`` (default 32).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import sys
import tempfile
import time

import httpx
import soundfile as sf
import torch

from pengi import Pengi
from pengi.cli.common import DTYPES, positive_int
from pengi.cli.serve import default_threads
from pengi.synthetic import example
from tests.serving_utils import ServerProcess, batch_histogram

PROMPT = "generate audio caption"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def histogram_delta(before: str, after: str) -> tuple[int, float, dict[str, int]]:
    """Between two /metrics texts: batches run, mean batch size, and batches per size bucket ("<=1", "<=2", ...,
    not cumulative)."""
    (buckets_before, count_before, sum_before), (buckets, count, total) = batch_histogram(before), \
        batch_histogram(after)
    count, total = count - count_before, total - sum_before
    per, previous = {}, 0.0
    for le in sorted(buckets):
        cumulative = buckets[le] - buckets_before.get(le, 0.0)
        if cumulative - previous:
            per[f"<={le:g}" if le != float("inf") else ">max"] = int(cumulative - previous)
        previous = cumulative
    return int(count), (total / count if count else 0.0), per


class Connection:
    """One keep-alive HTTP/1.1 connection: POST a prepared body, read a Content-Length response."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_level(port: int, bodies: list[bytes], expected: list[str], clients: int, requests: int
                    ) -> tuple[float, list[float], int]:
    """``clients`` concurrent clients, ``requests`` requests in all; returns (seconds, latencies, wrong answers)."""
    latencies: list[float] = []
    wrong = 0
    next_index = 0

    async def client() -> None:
        nonlocal next_index, wrong
        conn = Connection("127.0.0.1", port)
        try:
            while next_index < requests:
                i = next_index
                next_index += 1
                k = i % len(bodies)
                t = time.perf_counter()
                status, payload = await conn.post("/v1/chat/completions", bodies[k])
                latencies.append(time.perf_counter() - t)
                if status != 200 or json.loads(payload)["choices"][0]["message"]["content"] != expected[k]:
                    wrong += 1
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies, wrong


def make_random_model(shape: str, folder: str) -> str:
    """A Pengi with random weights and a GPT-2 LM of the given width and depth, saved to ``folder``."""
    from transformers import GPT2Config

    from pengi import PengiConfig

    width, layers = (int(x) for x in shape.lower().split("x"))
    default = Pengi.from_pretrained()
    tok = default.processor.tokenizer
    lm = GPT2Config(vocab_size=len(tok), n_embd=width, n_layer=layers, n_head=max(width // 64, 1), n_positions=128,
                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    config = PengiConfig.from_dict({**default.config.to_dict(), "lm_config": lm.to_dict()})
    torch.manual_seed(0)
    model = Pengi(config).eval()
    model.processor = default.processor
    model.save_pretrained(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the model shipped with pengi)")
    parser.add_argument("--random-model", default=None, metavar="WIDTHxLAYERS",
                        help="instead, a Pengi with random weights whose GPT-2 LM is WIDTH wide and LAYERS deep "
                             "(e.g. 512x8), with the default model's tokenizer and audio encoder shape: a model whose "
                             "compute, not the serving, dominates")
    parser.add_argument("--model-thread", action="store_true", help="serve with --model-thread")
    parser.add_argument("--clients", type=positive_int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--requests", type=positive_int, default=256, help="requests per level (at least 4 x clients)")
    parser.add_argument("--clips", type=positive_int, default=64, help="distinct clips (requests cycle through them)")
    parser.add_argument("--max-batch-size", type=positive_int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", "--torch-threads", dest="threads", type=positive_int, default=None,
                        help="torch threads, offline and in the server (default: the server's, the cores less one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--offline-repeats", type=positive_int, default=3, help="offline runs; the best is kept")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    args.threads = args.threads or default_threads()
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]  # the machine's 1-minute load average: how shared it is

    # ---------------------------------------------------------------- the clips, as files and as requests
    folder = tempfile.mkdtemp(prefix="pengi-serve-load-")
    if args.random_model:
        args.model = make_random_model(args.random_model, os.path.join(folder, f"random-{args.random_model}"))
    paths, bodies = [], []
    for seed in range(args.clips):
        e = example(seed)
        buf = io.BytesIO()
        sf.write(buf, e.audio, e.sample_rate, format="WAV", subtype="PCM_16")
        path = os.path.join(folder, f"clip{seed}.wav")
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        paths.append(path)
        content = [{"type": "text", "text": PROMPT},
                   {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode(),
                                                           "format": "wav"}}]
        bodies.append(json.dumps({"messages": [{"role": "user", "content": content}]}).encode())

    # ---------------------------------------------------------------- offline
    model = Pengi.from_pretrained(args.model).to(device=args.device, dtype=DTYPES[args.dtype]).eval()
    n_offline = max(args.requests, args.clips)
    offline_paths = [paths[i % len(paths)] for i in range(n_offline)]
    model.generate(paths[:args.max_batch_size], PROMPT, batch_size=args.max_batch_size)  # warm-up
    expected = model.generate(paths, PROMPT, batch_size=args.max_batch_size)
    offline: dict[str, float] = {}
    for label, batch in (("batch_max", args.max_batch_size), ("one_call", None)):
        best, cpu = float("inf"), float("inf")
        for _ in range(args.offline_repeats):
            t, c = time.perf_counter(), time.process_time()
            model.generate(offline_paths, PROMPT, batch_size=batch)
            best, cpu = min(best, time.perf_counter() - t), min(cpu, time.process_time() - c)
        offline[label] = n_offline / best
        offline[f"{label}_cpu_ms"] = 1000 * cpu / n_offline
    del model

    # ---------------------------------------------------------------- the server
    options = ["--quiet", "--device", args.device, "--dtype", args.dtype, "--max-batch-size", args.max_batch_size,
               "--max-wait-ms", args.max_wait_ms, "--threads", args.threads]
    options += ["--model", args.model] if args.model else []
    options += ["--model-thread"] if args.model_thread else []
    server = ServerProcess(*options, log_path=os.path.join(folder, "server.log"))
    url, port = server.url, server.port
    try:
        server.start(timeout=600)
        asyncio.run(run_level(port, bodies, expected, 4, 16))  # warm-up
        model_pid = httpx.get(url + "/health").json().get("model_pid")
        separate = model_pid != server.proc.pid
        rows = []
        for clients in args.clients:
            n = max(args.requests, 4 * clients)
            before = httpx.get(url + "/metrics").text
            cpu_before = (cpu_seconds(server.proc.pid), cpu_seconds(model_pid) if separate else 0.0)
            seconds, latencies, wrong = asyncio.run(run_level(port, bodies, expected, clients, n))
            cpu_after = (cpu_seconds(server.proc.pid), cpu_seconds(model_pid) if separate else 0.0)
            after = httpx.get(url + "/metrics").text
            batches, mean_batch, per_bucket = histogram_delta(before, after)
            cpu = [None if a is None or b is None else 1000 * (b - a) / n for a, b in zip(cpu_before, cpu_after)]
            rows.append({"clients": clients, "requests": n, "throughput": n / seconds,
                         "p50_ms": percentile(latencies, 50) * 1000, "p95_ms": percentile(latencies, 95) * 1000,
                         "batches": batches, "mean_batch": mean_batch, "batch_sizes": per_bucket, "wrong": wrong,
                         "server_cpu_ms": cpu[0], "model_cpu_ms": cpu[1] if separate else None,
                         "load": os.getloadavg()[0]})
    finally:
        server.stop(60)

    # ---------------------------------------------------------------- report
    single = next((r["throughput"] for r in rows if r["clients"] == 1), None)
    n_params = sum(p.numel() for p in Pengi.from_pretrained(args.model).parameters())
    what = f"random {args.random_model} model" if args.random_model else args.model or "default model"
    print(f"pengi serve load test: {what} "
          f"({n_params / 1e6:.2f} M parameters) on {args.device} ({args.dtype}), "
          f"{'--model-thread' if args.model_thread else 'model process'}, torch threads "
          f"{args.threads}, {os.cpu_count()} CPUs ({platform.processor() or '?'}), "
          f"torch {torch.__version__}; 1-minute load average {load_at_start:.1f} at the start, "
          f"{min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f} after each level")
    print(f"server: --max-batch-size {args.max_batch_size} --max-wait-ms {args.max_wait_ms:g}; {len(paths)} distinct "
          f"1 s clips; prompt {PROMPT!r}; greedy")
    print(f"offline model.generate: {offline['batch_max']:.1f} clips/s at batch_size={args.max_batch_size} "
          f"({offline['batch_max_cpu_ms']:.2f} CPU ms per clip), {offline['one_call']:.1f} clips/s with all "
          f"{n_offline} clips in one batch ({offline['one_call_cpu_ms']:.2f} CPU ms per clip)")
    print()
    print("| clients | requests | req/s | vs offline (batch " f"{args.max_batch_size}) | vs offline (one batch) | "
          "vs 1 client | p50 ms | p95 ms | batches | mean batch | batch sizes | CPU ms per request: server + model "
          "| wrong | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def ms(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f}"

    for r in rows:
        sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
        cpu = ms(r["server_cpu_ms"]) + (f" + {ms(r['model_cpu_ms'])}" if r["model_cpu_ms"] is not None else
                                        " (one process)")
        vs_one = f"{r['throughput'] / single:.1f}x" if single else "-"
        print(f"| {r['clients']} | {r['requests']} | {r['throughput']:.1f} | "
              f"{r['throughput'] / offline['batch_max']:.0%} | {r['throughput'] / offline['one_call']:.0%} | "
              f"{vs_one} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['batches']} | "
              f"{r['mean_batch']:.1f} | {sizes} | {cpu} | {r['wrong']} | {r['load']:.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "offline": offline, "levels": rows, "load_at_start": load_at_start}, f,
                      indent=2)
    return 1 if any(r["wrong"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
