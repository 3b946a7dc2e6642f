"""`edgekit bench`: how fast and how big an artifact is on this machine, and against PyTorch.

One run: load, warm up, time `runs` task calls (classify a batch, generate a reply, recognize a
clip), and report latency percentiles, throughput, peak resident memory and the task's own
figures (prompt latency and decode tokens/s for generate, real-time factor for recognize).

With `against`, the PyTorch source is timed in the same process with the same thread count on
exactly the same work: every graph call the task made (same feeds, same order, KV-cache steps
included) is recorded once and replayed through onnxruntime and through the PyTorch module.
Pre/post-processing is left out of that ratio on purpose: it is the same numpy code either way.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.bench_report import (Against, BenchReport, ClassifyWork, GenerateWork, GraphTiming, Memory,
                                  ParityAtConvert, Percentiles, RecognizeWork, Throughput, Work)
from edgekit.errors import ConfigError, EdgekitError, SourceError, UnsupportedError
from edgekit.runtimes.base import HostStepper
from edgekit.tasks import TASKS, resolve

Progress = Callable[[str, int, int], None]  # (phase, done, total)
Call = Callable[[], dict[str, float]]  # one unit of work -> figures measured inside it


@dataclass
class Workload:
    """What one task times: `call` does one unit of work; `figures` turns the runs (and the calls'
    latency) into the task's own figures, which also say how many items a call is (throughput)."""

    call: Call
    unit: str  # throughput unit
    figures: Callable[[list[dict[str, float]], Percentiles], Work]


# ------------------------------------------------------------------ per-task workloads


def classify_workload(model: Any, opts: dict[str, Any]) -> Workload:
    batch = int(opts["batch"])
    rng = np.random.default_rng(0)
    if model.kind == "image":
        h, w = model.contract.input.size
        items: list[Any] = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]
        what = f"{batch} random {h}x{w} RGB image(s)"
    elif model.kind == "text":
        items = [_TEXT] * batch
        what = f"{batch} text(s) of {len(_TEXT)} characters"
    else:
        spec = model.runners["model"].inputs[0]
        shape = [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        items = [rng.standard_normal(shape).astype(spec.dtype) for _ in range(batch)]
        what = f"{batch} tensor(s) of shape {shape}"

    def call() -> dict[str, float]:
        model.classify(items, top_k=1)
        return {}

    return Workload(call, "items/s", lambda runs, latency: ClassifyWork(batch, what))


def generate_workload(model: Any, opts: dict[str, Any]) -> Workload:
    """Prompt (or, for an encoder-decoder, the input) of `prompt_tokens`, then `max_new_tokens` new
    tokens per sequence, greedy or with `num_beams` beams; an encoder-decoder's encoder is also
    timed on its own."""
    ids = _prompt_ids(model, int(opts["prompt_tokens"]))
    new, beams = int(opts["max_new_tokens"]), int(opts.get("num_beams") or 1)
    seq2seq = model.is_encoder_decoder
    start = 1 if seq2seq else ids.shape[1]  # the output holds the decoder's start token, or the prompt
    # eos_token_id=[]: every call makes exactly `new` tokens (every beam too), so runs are comparable.
    kw = dict(input_ids=ids, eos_token_id=[], num_beams=beams)

    def call() -> dict[str, float]:
        figures: dict[str, float] = {}
        if seq2seq:
            t = time.perf_counter()
            model.runners["encoder"].run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
            figures["encoder_s"] = time.perf_counter() - t
        t0 = time.perf_counter()
        model.generate(max_new_tokens=1, **kw)  # the prompt (and encoder) + the first token
        t1 = time.perf_counter()
        out = model.generate(max_new_tokens=new, **kw)
        t2 = time.perf_counter()
        made = int(np.asarray(out).shape[1] - start)
        return {**figures, "prompt_s": t1 - t0, "full_s": t2 - t1, "new_tokens": made, "latency_s": t2 - t1}

    what = "greedy" if beams == 1 else f"beam search, {beams} beams (tokens/s per sequence)"

    def figures(runs: list[dict[str, float]], latency: Percentiles) -> GenerateWork:
        decode = [(r["new_tokens"] - 1) / max(r["full_s"] - r["prompt_s"], 1e-9) for r in runs if r["new_tokens"] > 1]
        return GenerateWork(
            prompt_tokens=int(ids.shape[1]), max_new_tokens=new, num_beams=beams, decoding=f"{what}, eos ignored",
            prompt_latency_ms=Percentiles.of_seconds([r["prompt_s"] for r in runs]),
            decode_tokens_per_s=float(np.median(decode)) if decode else None,
            new_tokens_per_call=float(np.mean([r["new_tokens"] for r in runs])),
            encoder_latency_ms=Percentiles.of_seconds([r["encoder_s"] for r in runs]) if seq2seq else None)

    return Workload(call, "new tokens/s (end to end)", figures)


def recognize_workload(model: Any, opts: dict[str, Any]) -> Workload:
    seconds = float(opts["audio_seconds"])
    rate = model.sample_rate
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    rng = np.random.default_rng(0)
    # Speech-like: a few gliding tones and noise; the transcript does not matter, the work does.
    wave = (0.3 * np.sin(2 * np.pi * (220 + 80 * np.sin(2 * np.pi * 0.5 * t)) * t)
            + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)

    def call() -> dict[str, float]:
        model.recognize(wave, sample_rate=rate)
        return {}

    def figures(runs: list[dict[str, float]], latency: Percentiles) -> RecognizeWork:
        return RecognizeWork(seconds, int(rate), real_time_factor=latency.p50 / 1000.0 / seconds)

    return Workload(call, "audio seconds/s", figures)


_TEXT = "The quick brown fox jumps over the lazy dog while the cat watches from the window sill."


def _prompt_ids(model: Any, n: int) -> np.ndarray:
    """`n` prompt ids from the artifact's tokenizer on English text (ids a real prompt would have)."""
    if model.tokenizer is None:
        raise UnsupportedError("bench needs the artifact's tokenizer to build a prompt", found="no tokenizer.json")
    ids = model.tokenizer.encode(_TEXT * (1 + n // 8), add_special_tokens=False).ids[:n]
    return np.asarray([ids], dtype=np.int64)


# ------------------------------------------------------------------ measuring


class _RssSampler:
    """Peak resident memory of this process, sampled every few ms on a daemon thread."""

    def __init__(self, interval: float = 0.005) -> None:
        try:
            import psutil
        except ImportError:
            raise ConfigError(
                "edgekit bench measures peak memory with psutil, which is not installed",
                fix="pip install psutil (or pip install 'edgekit[dev]')",
            ) from None
        self._proc = psutil.Process()
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)

    def now(self) -> int:
        return int(self._proc.memory_info().rss)

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def _timed(call: Call, warmup: int, runs: int, phase: str, progress: Progress | None) -> list[dict[str, float]]:
    for i in range(warmup):
        call()
        if progress:
            progress(f"{phase} warm-up", i + 1, warmup)
    out = []
    for i in range(runs):
        t0 = time.perf_counter()
        figures = call()
        figures.setdefault("latency_s", time.perf_counter() - t0)  # a task may time a part of its call
        out.append(figures)
        if progress:
            progress(phase, i + 1, runs)
    return out


# ------------------------------------------------------------------ the public call


def bench(
    artifact: str | os.PathLike[str],
    against: Any = None,
    device: str = "auto",
    runs: int | None = None,
    warmup: int = 3,
    threads: int | None = None,
    batch: int = 1,
    prompt_tokens: int = 32,
    max_new_tokens: int = 32,
    audio_seconds: float = 5.0,
    progress: Progress | None = None,
    num_beams: int = 1,
) -> BenchReport:
    """Benchmark an artifact; returns the report (edgekit/bench_report.py; see module doc).

    >>> import tempfile, edgekit, torch
    >>> out = tempfile.mkdtemp() + "/lin"
    >>> _ = edgekit.convert(torch.nn.Linear(8, 2), out, example_inputs=torch.rand(1, 8), labels=["a", "b"])
    >>> report = bench(out, runs=3, warmup=1, device="cpu")
    >>> report.task, report.runs, report.latency_ms.p50 > 0
    ('classify', 3, True)
    """
    import edgekit

    for name, value in (("runs", runs), ("warmup", warmup), ("batch", batch), ("prompt_tokens", prompt_tokens),
                        ("max_new_tokens", max_new_tokens), ("threads", threads), ("num_beams", num_beams)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "warmup" else 1)):
            raise ConfigError(f"bench option {name} must be a positive integer", found=repr(value))
    if not (isinstance(audio_seconds, (int, float)) and 0 < audio_seconds <= 600):
        raise ConfigError("bench option audio_seconds must be in (0, 600]", found=repr(audio_seconds))
    threads = threads or os.cpu_count() or 1
    with _RssSampler() as rss:
        before = rss.now()
        model = edgekit.load(artifact, device=device, threads=threads)
        task = TASKS[model.manifest.task]
        runs = runs or task.bench_runs
        work = resolve(task.workload)(model, {"batch": batch, "prompt_tokens": prompt_tokens,
                                              "max_new_tokens": max_new_tokens, "audio_seconds": audio_seconds,
                                              "num_beams": num_beams})
        measured = _timed(work.call, warmup, runs, "edgekit", progress)
    latencies = [r["latency_s"] for r in measured]
    m = model.manifest
    latency = Percentiles.of_seconds(latencies)
    work_figures = work.figures(measured, latency)
    return BenchReport(
        artifact=str(artifact), task=task.name, family=m.family, precision=m.produced_precision, device=model.device,
        threads=threads, warmup=warmup, runs=runs, latency_ms=latency,
        throughput=Throughput(work_figures.items * len(latencies) / sum(latencies), work.unit),
        memory_mb=Memory(rss_before_load=before / 2**20, peak_rss=rss.peak / 2**20),
        parity_at_convert=ParityAtConvert(m.parity.passed, m.parity.summary) if m.parity else None,
        latencies_ms=tuple(s * 1000.0 for s in latencies), work=work_figures,
        against=None if against is None else _against(model, work, against, threads, max(warmup, 1), runs, progress))


# ------------------------------------------------------------------ --against: replay on PyTorch


Recorded = list[tuple[str, dict[str, np.ndarray], list[str] | None]]


def _record(model: Any, call: Call) -> Recorded:
    """Every graph call the task makes during one call: (graph, feeds, outputs), in order."""
    calls: Recorded = []
    for name, runner in model.runners.items():
        original = runner.run

        def recording(feeds: Any, outputs: Any = None, _name: str = name, _run: Any = original) -> Any:
            calls.append((_name, {k: np.array(v, copy=True) for k, v in feeds.items()}, outputs))
            return _run(feeds, outputs)

        runner.run = recording  # an instance attribute: found however the task holds the runner
        # Step loops through `run` (host caches), so that each decode step is recorded with its feeds.
        runner.stepper = lambda spec, _r=runner: HostStepper(_r, spec)
    try:
        call()
    finally:
        for runner in model.runners.values():
            for attr in ("run", "stepper"):
                if attr in vars(runner):
                    delattr(runner, attr)
    if not calls:
        raise UnsupportedError(
            f"bench --against could not see the graph calls of {model.manifest.task}",
            found="the task ran its graphs without Runner.run",
            fix="report this as a bug in edgekit",
        )
    return calls


def _check_same_graphs(model: Any, spec: Any, description: str) -> None:
    made = {g.name: (list(g.input_names), list(g.output_names)) for g in spec.graphs()}
    for name, graph in model.manifest.graphs.items():  # the portable graphs: what the source exports
        want = ([t.name for t in graph.inputs], [t.name for t in graph.outputs])
        if made.get(name) != want:
            raise SourceError(
                f"the source '{description}' does not make graph '{name}' of this artifact",
                found=f"graph inputs/outputs {made.get(name)}, the artifact has {want}",
                fix="pass the source this artifact was converted from",
            )


def _against(model: Any, work: Workload, source: Any, threads: int, warmup: int, runs: int,
             progress: Progress | None) -> Against:
    import torch

    from edgekit.converters.ort_attention import portable_feeds
    from edgekit.converters.pipeline import reference_spec
    from edgekit.converters.reference import TorchRunner

    torch.set_num_threads(threads)
    spec = reference_spec(source, model.artifact)
    src = spec.src
    refs = {g.name: TorchRunner(g.module, model.manifest.graph(g.name), g.input_names, g.output_names)
            for g in spec.graphs()}
    _check_same_graphs(model, spec, src.description)
    calls = _record(model, work.call)
    # A fused-attention stand-in's calls read as the same work on the portable graph PyTorch runs.
    torch_calls = [(graph, portable_feeds(feeds) if model.runners[graph].kv_layout == "shared" else feeds, None)
                   for graph, feeds, _ in calls]
    try:  # the user's module on the artifact's inputs: its own exceptions mean "not this model"
        for graph, feeds, outputs in torch_calls:
            refs[graph].run(feeds, outputs)
    except EdgekitError:
        raise
    except Exception as e:
        raise SourceError(f"the source '{src.description}' cannot run this artifact's inputs ({type(e).__name__}: {e})",
                          fix="pass the source this artifact was converted from") from None
    timings: dict[str, list[float]] = {"edgekit": [], "pytorch": []}
    per_graph: dict[str, dict[str, list[float]]] = {g: {"edgekit": [], "pytorch": []} for g in model.runners}
    sides = {"edgekit": (model.runners, calls), "pytorch": (refs, torch_calls)}
    # One side after the other, not interleaved: onnxruntime's pool threads spin for a while after
    # each run and would steal the cores PyTorch is timed on.
    for side, (runners, replay) in sides.items():
        for i in range(warmup + runs):
            spent = dict.fromkeys(per_graph, 0.0)
            t0 = time.perf_counter()
            for graph, feeds, outputs in replay:
                t = time.perf_counter()
                runners[graph].run(feeds, outputs)
                spent[graph] += time.perf_counter() - t
            if i >= warmup:
                timings[side].append(time.perf_counter() - t0)
                for g, v in spent.items():
                    per_graph[g][side].append(v)
            if progress:
                progress(f"replay on {side}", i + 1, warmup + runs)
    ours, theirs = Percentiles.of_seconds(timings["edgekit"]), Percentiles.of_seconds(timings["pytorch"])
    graphs = {} if len(per_graph) < 2 else {  # e.g. an encoder-decoder: the encoder and the decode steps apart
        g: GraphTiming(edgekit_ms=float(np.median(t["edgekit"]) * 1e3), pytorch_ms=float(np.median(t["pytorch"]) * 1e3),
                       speedup_p50=float(np.median(t["pytorch"]) / max(np.median(t["edgekit"]), 1e-12)))
        for g, t in per_graph.items()}
    return Against(
        source=src.description, pytorch=torch.__version__, torch_threads=torch.get_num_threads(),
        graph_calls_per_run=len(calls), what="the same graph calls on the same inputs, pre/post-processing excluded",
        edgekit_ms=ours, pytorch_ms=theirs, speedup_p50=theirs.p50 / ours.p50, speedup_mean=theirs.mean / ours.mean,
        pytorch_latencies_ms=tuple(s * 1000.0 for s in timings["pytorch"]),
        edgekit_latencies_ms=tuple(s * 1000.0 for s in timings["edgekit"]), per_graph=graphs)


# ------------------------------------------------------------------ people: text and plot


def format_report(r: BenchReport) -> str:
    lat, w = r.latency_ms, r.work
    lines = [
        f"{r.task} {r.family} {r.precision} on {r.device}, {r.threads} threads, {r.runs} runs after {r.warmup} warm-up",
        f"  latency     p50 {lat.p50:.2f} ms  p90 {lat.p90:.2f} ms  p99 {lat.p99:.2f} ms",
        f"  throughput  {r.throughput.value:.1f} {r.throughput.unit}",
    ]
    if isinstance(w, GenerateWork):
        if w.encoder_latency_ms is not None:
            lines.append(f"  encoder     p50 {w.encoder_latency_ms.p50:.2f} ms ({w.prompt_tokens} tokens)")
        lines.append(f"  prompt      p50 {w.prompt_latency_ms.p50:.2f} ms ({w.prompt_tokens} tokens"
                     f"{', ' + str(w.num_beams) + ' beams' if w.num_beams > 1 else ''})")
        tps = w.decode_tokens_per_s
        lines.append(f"  decode      {tps:.1f} tokens/s" if tps is not None else "  decode      n/a (stopped at 1 token)")
    if isinstance(w, RecognizeWork):
        lines.append(f"  real-time factor {w.real_time_factor:.4f} ({w.audio_seconds:g} s of audio)")
    lines.append(f"  peak RSS    {r.memory_mb.peak_rss:.1f} MB")
    if r.against is not None:
        a = r.against
        lines.append(f"  vs PyTorch {a.pytorch} ({a.graph_calls_per_run} graph calls, same inputs, "
                     f"{a.torch_threads} threads): edgekit {a.edgekit_ms.p50:.2f} ms, "
                     f"pytorch {a.pytorch_ms.p50:.2f} ms p50 -> {a.speedup_p50:.2f}x")
        for g, t in a.per_graph.items():
            lines.append(f"    {g}: edgekit {t.edgekit_ms:.2f} ms, pytorch {t.pytorch_ms:.2f} ms -> "
                         f"{t.speedup_p50:.2f}x")
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's pyplot (headless), or an error naming the install; call it before a long run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib, which is not installed", fix="pip install matplotlib") from None
    return plt


def plot(report: BenchReport, path: str | os.PathLike[str]) -> None:
    """The latency distribution, and with --against the latency and throughput of edgekit and PyTorch
    on the same graph calls side by side, as a PNG for people."""
    plt = pyplot()
    a = report.against
    panels = 3 if a is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    ax.hist(report.latencies_ms, bins=30, color="tab:blue", alpha=0.8, label="edgekit (end to end)")
    for q in (report.latency_ms.p50, report.latency_ms.p90, report.latency_ms.p99):
        ax.axvline(q, linestyle="--", color="gray")
    ax.set(xlabel="latency per call (ms)", ylabel="calls", title=f"{report.task} {report.precision} on {report.device}")
    ax.legend()
    if a is not None:
        colors = ["tab:blue", "tab:orange"]
        p50 = [a.edgekit_ms.p50, a.pytorch_ms.p50]
        axes[0][1].bar(["edgekit", "pytorch"], p50, color=colors)
        axes[0][1].set(ylabel="p50 ms, same graph calls", title=f"latency: {a.speedup_p50:.2f}x vs PyTorch")
        # Throughput of the same work: the call's items (images, new tokens, audio seconds) per p50.
        items, unit = report.work.items, report.throughput.unit.split(" (")[0]
        axes[0][2].bar(["edgekit", "pytorch"], [items / (ms / 1000) for ms in p50], color=colors)
        axes[0][2].set(ylabel=unit, title="throughput, same graph calls")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
