"""Load on edgekit models served by Triton (the tritonserver bundled with nvidia-pytriton), one run.

    python benchmarks/bench_serve.py [--clients 16] [--requests 40] [--size 112] [--streams 1 4 16] [--threads 1]

classify: requests per second and p50/p99 latency of one-image requests (PNG bytes, decoded in the
server) from `--clients` concurrent gRPC clients, through Triton with dynamic batching
(`--max-batch`, `--delay-us`) and with batch-1 serving, beside in-process `classify` calls on the
same bytes (one caller, and `--clients` threads). generate: tokens per second over gRPC streams with
1, 4 and 16 concurrent streams of `--new-tokens` tokens (eos off, so every stream makes them all),
beside as many concurrent in-process streams. Every setup runs `--rounds` times, the setups in turn
(req/s and tokens/s: median over rounds), so that load from elsewhere falls on all of them alike;
onnxruntime gets `--threads` threads on both sides. Models: benchmarks/models.py's ResNet-18 (at
`--size`, `--width`) and its 4-layer GPT-2-shaped LM, random weights. Prints Markdown tables;
`--json FILE` keeps them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def artifacts(out: Path, size: int, width: int) -> tuple[Path, Path]:
    import edgekit
    from benchmarks import models

    clf, lm = out / f"resnet18-w{width}-{size}", out / "gpt2-d256"
    if not (clf / "edgekit.json").is_file():
        spec = models.resnet18(width=width, size=size)
        edgekit.convert(spec.pop("model"), clf, overwrite=True, **spec)
    if not (lm / "edgekit.json").is_file():
        edgekit.convert(models.gpt2_folder(out / "gpt2-hf"), lm, overwrite=True)
    return clf, lm


def pngs(n: int, size: int) -> list[bytes]:
    from PIL import Image

    from benchmarks.models import structured_images

    x = (structured_images(n, size=size, seed=3) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    out = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def load(call: Any, clients: int, requests: int) -> dict[str, Any]:
    """`clients` threads each making `requests` calls of call(i): wall time and every latency."""
    lat: list[float] = []
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for r in range(requests):
                s = time.perf_counter()
                call(t * requests + r)
                lat.append(time.perf_counter() - s)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"wall": wall, "lat": lat}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Rounds of one setup -> req/s (median over rounds) and latency percentiles (all calls pooled)."""
    ms = np.array([x for r in runs for x in r["lat"]]) * 1000
    return {"req_s": float(statistics.median(len(r["lat"]) / r["wall"] for r in runs)),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def classify_rows(clf: Path, images: list[bytes], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every setup runs once per round, in turn, so that load from elsewhere falls on all of them alike."""
    import edgekit
    from edgekit.serving.client import Client
    from PIL import Image

    local = edgekit.load(clf, device="cpu")
    one = lambda i: local.classify(Image.open(io.BytesIO(images[i % len(images)])), top_k=3)  # noqa: E731
    setups: dict[str, tuple[Any, int, int]] = {
        "in-process, 1 caller": (one, 1, args.clients * args.requests // 4),
        f"in-process, {args.clients} threads": (one, args.clients, args.requests)}
    with ExitStack() as stack:
        for label, max_batch in ((f"Triton, dynamic batching (max {args.max_batch}, {args.delay_us} us)",
                                  args.max_batch), ("Triton, batch-1 serving", 1)):
            http, grpc, metrics = free_ports(3)
            server = stack.enter_context(edgekit.serve(clf, names=["clf"], http_port=http, grpc_port=grpc,
                                                       metrics_port=metrics, device="cpu", max_batch=max_batch,
                                                       batch_delay_us=args.delay_us, threads=args.threads))
            conns = threading.local()

            def remote(i: int, url: str = server.grpc_url) -> Any:
                if getattr(conns, url, None) is None:
                    setattr(conns, url, Client(url, "grpc"))
                return getattr(conns, url).classify("clf", images[i % len(images)], top_k=3)

            setups[f"{label}, {args.clients} clients"] = (remote, args.clients, args.requests)
        for call, _, _ in setups.values():
            call(0)  # warm-up
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in setups}
        for _ in range(args.rounds):
            for name, (call, clients, requests) in setups.items():
                runs[name].append(load(call, clients, requests))
    local.close()
    return [{"setup": name, **summarize(r)} for name, r in runs.items()]


def generate_rows(lm: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """For each stream count: that many concurrent in-process streams, then as many gRPC streams, per round."""
    import edgekit
    from edgekit.serving.client import Client

    prompt, opts = "The quick brown fox", {"max_new_tokens": args.new_tokens, "eos_token_id": []}
    local = edgekit.load(lm, device="cpu")
    http, grpc, metrics = free_ports(3)
    rows = []
    with edgekit.serve(lm, names=["lm"], http_port=http, grpc_port=grpc, metrics_port=metrics, device="cpu",
                       streams=max(args.streams), threads=args.threads) as server:
        list(Client(server.grpc_url, "grpc").stream("lm", prompt, **opts))  # warm-up
        list(local.generate(prompt, stream=True, **opts))

        def in_process() -> Any:
            return local.generate(prompt, stream=True, **opts)

        def remote() -> Any:
            return Client(server.grpc_url, "grpc").stream("lm", prompt, **opts)

        for n in args.streams:
            for where, make in (("in-process", in_process), ("Triton gRPC", remote)):
                rates, first = [], []
                for _ in range(args.rounds):
                    def one(_: int) -> None:
                        s = time.perf_counter()
                        for k, _piece in enumerate(make()):
                            if k == 0:
                                first.append(time.perf_counter() - s)

                    r = load(one, n, 1)
                    rates.append(n * args.new_tokens / r["wall"])
                rows.append({"setup": f"{where}, {n} concurrent streams", "streams": n,
                             "tok_s": float(statistics.median(rates)),
                             "first_piece_p50_ms": 1000 * statistics.median(first)})
    local.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=40, help="classify requests per client")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--delay-us", type=int, default=2000)
    ap.add_argument("--size", type=int, default=112, help="classifier input size (ResNet-18 shape)")
    ap.add_argument("--width", type=int, default=32, help="ResNet-18 base width (64: the real one)")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="each setup runs this often, the setups in turn")
    ap.add_argument("--threads", type=int, default=1,
                    help="onnxruntime intra-op threads, in process and per server instance alike")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-serve"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    # The same thread count on both sides: a 2-thread pool loses badly to a 1-thread one when the
    # cores are shared (it waits for a descheduled thread at every op), which would decide the ratio.
    os.environ["EDGEKIT_THREADS"] = str(args.threads)
    clf, lm = artifacts(args.out, args.size, args.width)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_before": os.getloadavg()}
    report = {"classify": classify_rows(clf, pngs(32, args.size), args), "generate": generate_rows(lm, args)}
    machine["load_after"] = os.getloadavg()
    report["machine"] = machine
    base = report["classify"][0]["req_s"]
    print(f"classify, ResNet-18 (width {args.width}) {args.size}x{args.size}, one PNG per request:")
    print("| setup | req/s | vs in-process 1 caller | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for r in report["classify"]:
        print(f"| {r['setup']} | {r['req_s']:.1f} | {r['req_s'] / base:.2f}x | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    print(f"\ngenerate, 4-layer GPT-2-shaped (d=256), {args.new_tokens} new tokens per stream:")
    print("| setup | tokens/s (all streams) | first piece p50 ms |\n|---|---|---|")
    for r in report["generate"]:
        print(f"| {r['setup']} | {r['tok_s']:.1f} | {r['first_piece_p50_ms']:.0f} |")
    print(f"\nonnxruntime threads: {args.threads} per call in process, per instance in Triton")
    print(f"machine: {machine['cores']} cores, load average {machine['load_before'][0]:.2f} before, "
          f"{machine['load_after'][0]:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
