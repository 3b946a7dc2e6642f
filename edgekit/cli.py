"""The `edgekit` command line. Exit codes: 0 ok, 1 check failed (parity), 2 usage or input error.

`--json` prints exactly one JSON document on stdout; logs and progress go to stderr.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit.contract.codec import encode
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.parity_report import ParityReport

log = logging.getLogger("edgekit")

PRECISIONS = ["fp32", "fp16", "int8", "int4"]
DEVICES = ["auto", "cpu", "cuda", "tensorrt"]


def _emit(data: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text(data))


def _fail(e: EdgekitError) -> None:
    click.echo(f"edgekit: error: {e}", err=True)
    sys.exit(e.exit_code)


class _Group(click.Group):
    """Turn every EdgekitError into one line on stderr and its exit code (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgekitError as e:
            _fail(e)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """edgekit: convert PyTorch models, run them on CPU, CUDA, TensorRT or Jetson, and prove parity.

    \b
    Typical flow:
      edgekit convert model_dir -o models/m --precision int8 --calibration images/
      edgekit run models/m cat.jpg
      edgekit parity models/m --against model_dir
      edgekit bench models/m --against model_dir

    \b
    Shell completion (bash; zsh and fish: zsh_source, fish_source):
      eval "$(_EDGEKIT_COMPLETE=bash_source edgekit)"
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("edgekit").setLevel(level)


@cli.command()
@click.argument("source")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Artifact folder to write.")
@click.option("--task", type=click.Choice(["classify", "generate", "recognize"]), help="Inferred from HF configs.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--int8-method", type=click.Choice(["static", "dynamic", "blockwise"]),
              help="static Q/DQ (TensorRT), dynamic (CPU) or blockwise (per-block int8, CPU; decoders' and Whisper's default).")
@click.option("--calibration", type=click.Path(exists=True, path_type=Path), help="int8: folder of images, .npy, or .txt of texts.")
@click.option("--target", type=click.Choice(["cpu", "cuda", "tensorrt", "jetson"]), default="cpu", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing artifact folder (atomically).")
@click.option("--no-strict", is_flag=True, help="Keep the artifact even if parity is outside tolerance.")
@click.option("--scores", type=click.Choice(["softmax", "sigmoid", "probabilities", "log_probabilities", "none"]),
              help="classify: what the model outputs (detected when not given).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary as JSON.")
def convert(source: str, out: Path, task: str | None, precision: str, int8_method: str | None,
            calibration: Path | None, target: str, overwrite: bool, no_strict: bool, scores: str | None,
            as_json: bool) -> None:
    """Convert SOURCE (HF model folder, .pt2 file, or package.module:factory) into an artifact."""
    import edgekit

    art = edgekit.convert(source, out, task=task, precision=precision, calibration=calibration, target=target,
                          overwrite=overwrite, int8_method=int8_method, strict=not no_strict, scores=scores)
    m = art.manifest
    summary = {"artifact": str(art.path), "task": m.task, "family": m.family,
               "precision": encode(m.precision), "parity": encode(m.parity)}
    said = m.parity.summary if m.parity else "not measured"
    _emit(summary, as_json, lambda s: f"wrote {s['artifact']} ({s['task']}, {s['family']}, "
                                      f"{s['precision']['produced']}); parity: {said}")


# `edgekit run` per task (edgekit/tasks/__init__.py names them): (model, inputs, options) -> (JSON data, text).
def run_classify(model: Any, inputs: tuple[str, ...], opts: dict[str, Any]) -> tuple[Any, str]:
    if not inputs:
        raise click.UsageError("classify needs INPUT files (images) or texts")
    results = model.classify(list(inputs), top_k=opts["top_k"])
    data = [{"input": i, "predictions": [{"label": p.label, "score": p.score} for p in r]} for i, r in zip(inputs, results)]
    text = "\n".join(f"{d['input']}: " + ", ".join(f"{p['label']} {p['score']:.3f}" for p in d["predictions"]) for d in data)
    return data, text


def run_recognize(model: Any, inputs: tuple[str, ...], opts: dict[str, Any]) -> tuple[Any, str]:
    if not inputs:
        raise click.UsageError("recognize needs INPUT audio files (WAV, FLAC, OGG)")
    if opts.get("stream"):
        return _recognize_streamed(model, inputs, opts.get("as_json", False))
    from edgekit.subtitles import write

    fmt, out = opts.get("format"), opts.get("out")
    if out is not None and len(inputs) != 1:
        raise click.UsageError(f"-o/--out writes one transcript; {len(inputs)} INPUT files were given")
    if out is not None:
        _check_new(out, opts.get("overwrite", False))  # before the transcription, not after it
    data, files = [], []
    for path in inputs:
        t = model.recognize(path, vad=opts.get("vad", False), word_timestamps=opts.get("word_timestamps", False),
                            long_form=opts.get("long_form", False))
        data.append({"input": path, "text": t.text, "language": t.language,
                     "segments": [_segment(s) for s in t.segments]})
        files.append(write(t, fmt) if fmt else t.text + "\n")
    if out is not None:
        _write_new(out, files[0], opts.get("overwrite", False))
        return data, ""
    if fmt:
        return data, "\n".join(files)
    return data, "\n".join(f"{d['input']}: {d['text']}" for d in data)


def _segment(s: Any) -> dict[str, Any]:
    """A segment for --json; its words only where --word-timestamps asked for them."""
    seg = {"text": s.text, "start": s.start, "end": s.end}
    if s.words is not None:
        seg["words"] = [{"start": w.start, "end": w.end, "word": w.word, "probability": w.probability} for w in s.words]
    return seg


def _check_new(out: Path, overwrite: bool) -> None:
    from edgekit.errors import OutputExistsError

    if out.exists() and (out.is_dir() or not overwrite):
        raise OutputExistsError(f"the output '{out}' already exists" + (" and is a folder" if out.is_dir() else ""),
                                fix="choose another path" + ("" if out.is_dir() else ", or pass --overwrite"))


def _write_new(out: Path, text: str, overwrite: bool) -> None:
    """`text` to the file `out`, atomically; an existing file only with --overwrite."""
    _check_new(out, overwrite)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def _recognize_streamed(model: Any, inputs: tuple[str, ...], as_json: bool) -> tuple[Any, str]:
    """Each file fed to recognize_stream in 320 ms pieces (a microphone's pace, not its clock);
    a line per change: "~ text" while tentative, "= words" when words become final."""
    from edgekit.preprocess.audio import load_audio

    if not hasattr(model, "recognize_stream"):
        raise click.UsageError(f"--stream needs a CTC or Whisper artifact; this one is {model.manifest.family}")
    data = []
    for path in inputs:
        wave = load_audio(path, None, model.sample_rate)
        piece = model.sample_rate * 320 // 1000
        words: list[Any] = []
        partial = text = ""
        for u in model.recognize_stream(wave[i:i + piece] for i in range(0, len(wave), piece)):
            words += u.words
            if not as_json and u.words:
                click.echo(f"= {' '.join(w.text for w in u.words)}  [{u.words[0].start:.2f}-{u.words[-1].end:.2f} s]")
            if not as_json and u.text_partial and (u.words or u.text_partial != partial):
                click.echo(f"~ {u.text_partial}")
            partial, text = u.text_partial, u.text_final
        data.append({"input": path, "text": text, "language": None,
                     "segments": [{"text": w.text, "start": w.start, "end": w.end} for w in words]})
    return data, "\n".join(f"{d['input']}: {d['text']}" for d in data)


def run_generate(model: Any, inputs: tuple[str, ...], opts: dict[str, Any]) -> tuple[Any, str]:
    prompts = [opts["prompt"]] if opts.get("prompt") is not None else list(inputs)
    # --top-k defaults to 5 for classify; for generate, sampling is asked for only when --top-k is given.
    sample = opts.get("top_k_given", False)
    kw: dict[str, Any] = dict(max_new_tokens=opts["max_new_tokens"], do_sample=sample,
                              top_k=opts["top_k"] if sample else 0)
    if opts.get("num_beams") is not None:  # an explicit None would switch off the model's own num_beams
        kw["num_beams"] = opts["num_beams"]
    if opts.get("tgt_lang") is not None:
        kw["tgt_lang"] = opts["tgt_lang"]
    schema = opts.get("json_schema")
    if schema is not None:
        kw["response_format"] = _response_format(schema)
    if opts.get("chat"):
        return _chat(model, prompts, kw, opts.get("as_json", False))
    if getattr(model, "vision", None) is not None and opts.get("prompt") is not None and inputs:
        return _with_images(model, opts["prompt"], list(inputs), kw)
    if not prompts:
        raise click.UsageError("generate needs --prompt TEXT or prompts as INPUT arguments")
    texts = model.generate(prompts, **kw)
    data = [{"prompt": p, "text": t} for p, t in zip(prompts, texts)]
    if model.is_encoder_decoder:  # a translation (or summary) is not a continuation of its input
        return data, "\n".join(f"{p} -> {t}" for p, t in zip(prompts, texts))
    if schema is not None:  # the JSON alone, one document per line, for the next program to read
        return data, "\n".join(texts)
    return data, "\n".join(p + t for p, t in zip(prompts, texts))


def _response_format(path: Path) -> dict[str, Any]:
    """--json-schema FILE as OpenAI's response_format (the file's stem names it)."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise click.BadParameter(f"cannot read a JSON schema from {path}: {e}", param_hint="--json-schema") from None
    return {"type": "json_schema", "json_schema": {"name": path.stem, "schema": schema}}


def _with_images(model: Any, prompt: str, images: list[str], kw: dict[str, Any]) -> tuple[Any, str]:
    """A vision-language artifact: INPUT images and the --prompt, as one user turn of the model's chat
    template where it has one, else the prompt after one image placeholder per image (where it names none)."""
    if model.contract.chat is not None:
        content = [{"type": "image", "image": p} for p in images] + [{"type": "text", "text": prompt}]
        text = model.generate(messages=[{"role": "user", "content": content}], **kw)
    else:
        mark = model.vision.placeholder
        text = model.generate(prompt if mark in prompt else mark * len(images) + " " + prompt, images=images, **kw)
    return [{"images": images, "prompt": prompt, "text": text}], text


def _chat(model: Any, prompts: list[str], kw: dict[str, Any], as_json: bool) -> tuple[Any, str]:
    """One conversation: each prompt (or, with none, each line on stdin) is the next user turn,
    rendered with the model's chat template together with the turns before it."""
    turns = prompts or (line.rstrip("\n") for line in sys.stdin if line.strip())
    history: list[dict[str, str]] = []
    data = []
    for turn in turns:
        history.append({"role": "user", "content": turn})
        reply = model.generate(messages=history, **kw)
        history.append({"role": "assistant", "content": reply})
        data.append({"user": turn, "assistant": reply})
        if not as_json:  # shown as it comes: a person may be typing the next turn
            click.echo(reply)
    if not data:
        raise click.UsageError("--chat needs --prompt TEXT, prompts as INPUT arguments, or lines on stdin")
    return data, ""


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1)
@click.option("--prompt", help="generate: the prompt text.")
@click.option("--max-new-tokens", type=int, help="generate: tokens to add [the model's default, else 20].")
@click.option("--top-k", type=int, default=5, show_default=True, help="classify: labels to show; generate: sampling top-k.")
@click.option("--num-beams", type=click.IntRange(min=1), help="generate: beam search width [the model's default].")
@click.option("--tgt-lang", help="generate: target language of a translation model (e.g. zh).")
@click.option("--json-schema", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="generate: answer with JSON that follows this JSON Schema file (needs edgekit[structured]).")
@click.option("--chat", is_flag=True, help="generate: prompts are user turns of one conversation, rendered with "
                                           "the model's chat template (no prompt: one turn per line on stdin).")
@click.option("--vad", is_flag=True, help="recognize: transcribe only the speech Silero VAD finds (long audio).")
@click.option("--long-form", is_flag=True, help="recognize (Whisper): sequential 30 s windows, each from where the "
                                                "last one's segments ended, as transformers' generate on long audio.")
@click.option("--word-timestamps", is_flag=True, help="recognize: each segment's words with their times "
                                                      "(--format json and --json; SRT/VTT cues stay segments).")
@click.option("--format", "fmt", type=click.Choice(["srt", "vtt", "json"]),
              help="recognize: print (or write to -o) each transcript as SubRip, WebVTT or JSON.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="recognize: write the one INPUT's transcript to this file (--format, else plain text).")
@click.option("--overwrite", is_flag=True, help="recognize: replace an existing -o file.")
@click.option("--stream", is_flag=True, help="recognize (CTC): feed each file in 320 ms pieces to recognize_stream, "
                                             "printing tentative (~) and final (=) text as it settles.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime CPU threads per session [all cores].")
@click.option("--dla-core", type=click.IntRange(min=0), help="TensorRT on a Jetson: the plan built for this DLA core.")
@click.option("--json", "as_json", is_flag=True, help="Print results as one JSON document.")
def run(artifact: Path, inputs: tuple[str, ...], prompt: str | None, max_new_tokens: int | None, top_k: int,
        num_beams: int | None, tgt_lang: str | None, json_schema: Path | None, chat: bool, vad: bool,
        long_form: bool, word_timestamps: bool, fmt: str | None, out: Path | None, overwrite: bool, stream: bool,
        device: str, threads: int | None, dla_core: int | None, as_json: bool) -> None:
    """Run an artifact on INPUTS (image/audio files or texts) or a --prompt."""
    import edgekit
    from edgekit.tasks import TASKS, resolve

    model = edgekit.load(artifact, device=device, threads=threads, tensorrt=edgekit.TensorRTOptions(dla_core=dla_core))
    speech = {"--vad": vad, "--long-form": long_form, "--word-timestamps": word_timestamps, "--format": fmt,
              "-o/--out": out, "--overwrite": overwrite}
    if json_schema is not None and model.manifest.task != "generate":
        raise click.UsageError(f"--json-schema is for generate artifacts; this one is {model.manifest.task}")
    if model.manifest.task != "recognize" and any(speech.values()):
        asked = ", ".join(k for k, v in speech.items() if v)
        raise click.UsageError(f"{asked}: recognize options; this artifact's task is {model.manifest.task}")
    task_run = resolve(TASKS[model.manifest.task].run)
    if stream and model.manifest.task != "recognize":
        raise click.UsageError(f"--stream is for recognize artifacts; this one is {model.manifest.task}")
    given = click.get_current_context().get_parameter_source("top_k") == click.core.ParameterSource.COMMANDLINE
    data, text = task_run(model, inputs, {"prompt": prompt, "max_new_tokens": max_new_tokens, "top_k": top_k,
                                          "top_k_given": given, "num_beams": num_beams, "tgt_lang": tgt_lang,
                                          "json_schema": json_schema, "chat": chat, "as_json": as_json, "vad": vad,
                                          "format": fmt, "out": out, "overwrite": overwrite, "stream": stream,
                                          "word_timestamps": word_timestamps, "long_form": long_form})
    if text or as_json:
        _emit({"device": model.device, "results": data}, as_json, lambda _: text)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--against", required=True, help="The PyTorch source: HF folder, .pt2, or package.module:factory.")
@click.option("--samples", type=int, default=None, help="Number of inputs to compare (task default if unset).")
@click.option("--json", "as_json", is_flag=True)
def parity(artifact: Path, against: str, samples: int | None, as_json: bool) -> None:
    """Compare ARTIFACT with its PyTorch source on the same inputs; exit 1 if outside tolerance."""
    import edgekit

    report = edgekit.parity(artifact, against, samples=samples)
    _emit(encode(report), as_json, lambda _: _parity_text(report))
    if not report.passed:
        sys.exit(1)


def _parity_text(r: ParityReport) -> str:
    lines = [f"precision {r.precision}, {r.samples} samples: {'PASS' if r.passed else 'FAIL'}"]
    for name, stats in r.outputs.items():
        lines.append(f"  {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
    lines += [f"  {k}: {v:.4g}" for k, v in r.measures.items()]
    lines += [f"  {k}: {', '.join(f'{x:.4g}' for x in v)}" for k, v in r.rows.items()]
    lines += [f"  {k}: {v}" for k, v in r.notes.items()]
    e2e = r.end_to_end
    if e2e is not None and e2e.scores_max_abs is not None and e2e.top1 is not None:  # classify: raw inputs to scores
        lines.append(f"  end to end: {e2e.samples} raw inputs, scores max abs diff {e2e.scores_max_abs:.4g}, "
                     f"top-1 {e2e.top1:.4g} (against {e2e.reference})")
    if e2e is not None and e2e.preprocess is not None:
        lines.append(f"  pre-processing: {e2e.preprocess.summary}")
    lines.append(f"  {r.summary}")
    return "\n".join(lines)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.option("--context", type=click.IntRange(min=2),
              help="generate: also the memory a run needs with calls up to N tokens (weights, cache, overhead).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="with --context: rows per call (inputs times beams).")
@click.option("--device", "mem_device", type=click.Choice(("cpu", "cuda", "tensorrt")), default="cpu",
              show_default=True, help="with --context: the device whose graphs are counted.")
def info(artifact: Path, as_json: bool, context: int | None, batch: int, mem_device: str) -> None:
    """Show what an artifact holds: task, family, precision, inputs/outputs, parity, stand-in graphs, engines."""
    from edgekit.artifact import open_artifact

    art = open_artifact(artifact)
    m = art.manifest
    doc = json.loads(m.to_json())
    est = None
    if context is not None:
        from edgekit.memory import call_size, estimate

        est = estimate(art, mem_device, *call_size(art, context, batch))
        doc["memory"] = {**encode(est), "weights_bytes": est.weights_bytes, "total_bytes": est.total_bytes}
    _emit(doc, as_json, lambda d: _info_text(m) + ("" if est is None else "\n" + _memory_text(est)))


def _memory_text(est: Any) -> str:
    from edgekit.memory import mib

    lines = [f"memory on {est.device} at context {est.context}, {est.batch} row(s): {mib(est.total_bytes)}"]
    lines += [f"  weights {w.graph} ({w.file}): {mib(w.bytes)}" for w in est.weights]
    lines.append(f"  cache: {mib(est.cache_bytes)} ({est.cache_note})")
    lines.append(f"  prompt logits: {mib(est.logits_bytes)} (a prompt of context - 1 tokens, kept for the call)")
    lines.append(f"  overhead: {mib(est.overhead_bytes)} (onnxruntime and its prepacked weights, measured; the prompt "
                 "run's other activations are not counted)")
    return "\n".join(lines)


def _info_text(m: Any) -> str:
    lines = [f"task: {m.task} ({m.contract.tag})", f"family: {m.family}",
             f"precision: {m.precision.produced} ({m.precision.method})", f"source: {m.source.description}"]
    for name, g in m.graphs.items():
        lines.append(f"graph {name} ({g.file}):")
        lines += [f"  in  {t.name}: {t.dtype} {t.shape}" for t in g.inputs]
        lines += [f"  out {t.name}: {t.dtype} {t.shape}" for t in g.outputs]
    if m.parity:
        lines.append(f"parity at convert: {'PASS' if m.parity.passed else 'FAIL'} - {m.parity.summary}")
        pre = m.parity.end_to_end.preprocess if m.parity.end_to_end is not None else None
        if pre is not None:
            lines.append(f"pre-processing at convert: {pre.summary}")
    for rg in m.runtime_graphs.values():
        proof = f"{'PASS' if rg.proof.passed else 'FAIL'} - {rg.proof.summary}" if rg.proof else "none"
        lines.append(f"{rg.backend} graph for '{rg.replaces}' ({rg.file}, {rg.kv_layout} cache, {'/'.join(rg.devices)}, "
                     f"{rg.backend} {rg.version}): proof {proof}")
    for name, why in m.runtime_graph_notes.items():
        lines.append(f"onnxruntime graph for '{name}': none, the portable graph runs ({why})")
    lines.append(f"engines: {', '.join(m.engines) or 'none (run `edgekit build` on the target)'}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    return "\n".join(lines)


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--against", help="Also time the PyTorch source (HF folder, .pt2, package.module:factory) in this run.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--runs", type=click.IntRange(min=1), help="Timed calls [classify 50, generate 5, recognize 5].")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed calls first.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for edgekit and PyTorch [all cores].")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="classify: inputs per call.")
@click.option("--prompt-tokens", type=click.IntRange(min=1), default=32, show_default=True, help="generate: prompt length.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=32, show_default=True, help="generate: tokens per call.")
@click.option("--num-beams", "bench_beams", type=click.IntRange(min=1), default=1, show_default=True,
              help="generate: beam search width.")
@click.option("--audio-seconds", type=click.FloatRange(min=0.1, max=600), default=5.0, show_default=True,
              help="recognize: clip length.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the latency distribution (and ratios) as a PNG (needs matplotlib).")
def bench(artifact: Path, against: str | None, device: str, runs: int | None, warmup: int,
          threads: int | None, batch: int, prompt_tokens: int, max_new_tokens: int, bench_beams: int,
          audio_seconds: float, as_json: bool, plot_file: Path | None) -> None:
    """Time ARTIFACT on this machine: latency p50/p90/p99, throughput, peak memory, ratio vs PyTorch."""
    from edgekit import bench as B

    if plot_file is not None:
        B.pyplot()  # fail before a long run, not after it
    quiet = logging.getLogger("edgekit").level >= logging.ERROR
    report = B.bench(artifact, against=against, device=device, runs=runs, warmup=warmup, threads=threads,
                     batch=batch, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens,
                     audio_seconds=audio_seconds, progress=None if quiet else _progress_bar(), num_beams=bench_beams)
    if plot_file is not None:
        B.plot(report, plot_file)
    _emit(encode(report), as_json, lambda _: B.format_report(report))


def _progress_bar() -> Callable[[str, int, int], None]:
    """Progress on stderr: a live bar on a terminal, one line per finished phase otherwise."""
    tty = sys.stderr.isatty()

    def show(phase: str, done: int, total: int) -> None:
        if tty:
            filled = int(30 * done / total)
            click.echo(f"\r{phase:>20} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", err=True,
                       nl=done == total)
        elif done == total:
            click.echo(f"{phase}: {total} calls done", err=True)

    return show


@cli.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["tensorrt"]), default="tensorrt", show_default=True)
@click.option("--dla-core", type=click.IntRange(min=0), help="Jetson: run on this DLA core, GPU fallback for the rest.")
@click.option("--workspace", type=click.IntRange(min=16), default=4096, show_default=True, help="Builder workspace, MB.")
@click.option("--max-batch", type=click.IntRange(min=1), help="Largest batch the engine takes [task default].")
@click.option("--shape", "shapes", multiple=True, metavar="DIM=MIN,OPT,MAX", help="Range of a named dynamic dim.")
@click.option("--hardware-compatible", is_flag=True, help="One engine for every Ampere-or-newer GPU (a bit slower).")
@click.option("--version-compatible", is_flag=True, help="Engine also runs on later TensorRT of the same major.")
@click.option("--rebuild", is_flag=True, help="Build even when an engine with the same fingerprint exists.")
@click.option("--contexts", type=click.IntRange(min=1), default=2, show_default=True,
              help="Calls that may run at once (threads, generate streams); each needs its own copy of the profiles.")
@click.option("--json", "as_json", is_flag=True)
def build(artifact: Path, device: str, dla_core: int | None, workspace: int, max_batch: int | None,
          shapes: tuple[str, ...], hardware_compatible: bool, version_compatible: bool, rebuild: bool,
          contexts: int, as_json: bool) -> None:
    """Build TensorRT engines for ARTIFACT on this GPU / Jetson (kept in ARTIFACT/engines/, reused)."""
    from edgekit.artifact import open_artifact
    from edgekit.contract.codec import encode
    from edgekit.runtimes.tensorrt.build import BuildOptions, build_engines
    from edgekit.runtimes.tensorrt.profiles import parse_shape

    art = open_artifact(artifact)
    quiet = logging.getLogger("edgekit").level >= logging.ERROR
    opts = BuildOptions(workspace_mb=workspace, dla_core=dla_core, rebuild=rebuild, max_batch=max_batch,
                        contexts=contexts,
                        hardware_compatible=hardware_compatible, version_compatible=version_compatible,
                        shapes=dict(parse_shape(s) for s in shapes), progress=None if quiet else _build_progress)
    records = build_engines(art.path, art.manifest, opts)
    _emit(encode(records), as_json,
          lambda _: "\n".join(f"{g}: {r.file} (built in {r.build_seconds} s)" for g, r in records.items()))


def _build_progress(phase: str, done: int, total: int) -> None:
    if sys.stderr.isatty():
        click.echo(f"\r{phase[:30]:>30} {done}/{total}", err=True, nl=done == total)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """What this machine can run: GPU, driver, CUDA, TensorRT, DLA, onnxruntime providers (each smoke-run)."""
    from edgekit.runtimes import probe

    _emit(probe.report(), as_json, probe.format_report)


# ---------------------------------------------------------------- serving on NVIDIA Triton (edgekit/serving)

def _serving_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options `serve` and `export triton` share: how each model is served (serving.ServeOptions)."""
    opts = [
        click.option("--name", "names", multiple=True, help="Model name per artifact, in order [the folder's name]."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="edgekit.load's device inside the server."),
        click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Copies of each model (each its own process)."),
        click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
                     help="classify: rows Triton's dynamic batcher joins; 1 = batch-1 serving."),
        click.option("--batch-delay-us", type=click.IntRange(min=0), default=1000, show_default=True,
                     help="classify: how long the batcher waits to fill a batch (microseconds)."),
        click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
                     help="onnxruntime threads per instance (0: all cores)."),
        click.option("--streams", type=click.IntRange(min=1), default=8, show_default=True,
                     help="generate: streamed generations one instance runs at once."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _serve_options(device: str, instances: int, max_batch: int, batch_delay_us: int, threads: int,
                   streams: int) -> Any:
    from edgekit.serving import ServeOptions

    return ServeOptions(max_batch=max_batch, batch_delay_us=batch_delay_us, instances=instances, device=device,
                        threads=threads, streams=streams)


@cli.command("serve")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Listen address (0.0.0.0: every interface).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Append Triton's log to this file [a file in the run folder, removed at exit].")
@_serving_options
def serve_cmd(artifacts: tuple[Path, ...], http_port: int, grpc_port: int, metrics_port: int, address: str,
              log_file: Path | None, names: tuple[str, ...], **opts: Any) -> None:
    """Serve ARTIFACTS on NVIDIA Triton Inference Server (KServe v2 HTTP/gRPC) until SIGINT or SIGTERM.

    \b
    Each artifact is a model named after its folder; a generate artifact also gets NAME_stream
    (token streaming over gRPC), and so does a CTC or Whisper one (recognize_stream). Needs the [serve] extra. Tensors per task: see README.
    """
    import signal
    import threading

    from edgekit.errors import BackendUnavailableError
    from edgekit.serving.server import _errors, serve

    # Handlers first: a signal while Triton starts (it may already answer health checks before
    # serve() returns) then stops it cleanly once started, instead of click's "Aborted!".
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = serve(list(artifacts), names=names, http_port=http_port, grpc_port=grpc_port,
                   metrics_port=metrics_port, address=address, options=_serve_options(**opts), log=log_file)
    click.echo(f"serving {', '.join(m.name for m in server.models)}: HTTP {server.http_url}, gRPC "
               f"{server.grpc_url}, metrics {server.metrics_url} (Ctrl-C stops)", err=True)
    while not stop.wait(0.5) and server.running():
        pass
    died = not server.running()
    log = server.log()
    code = server.stop()
    if died:
        raise BackendUnavailableError(f"tritonserver stopped on its own (exit code {code})", found=_errors(log))
    click.echo("stopped", err=True)


@cli.group()
def export() -> None:
    """Export artifacts for other serving stacks."""


@export.command("triton")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Model repository folder to write.")
@click.option("--bundled", is_flag=True, help="Also point the models at this machine's serving environment, for the "
              "tritonserver of nvidia-pytriton (leave off for NVIDIA's Triton container).")
@click.option("--plain", type=click.Choice(["onnxruntime", "tensorrt"]),
              help="Classifiers: run the graph as Triton's own NAME_model (onnxruntime_onnx, or tensorrt_plan from "
                   "the artifact's engine); NAME keeps edgekit's pre/post-processing around it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder (atomically).")
@click.option("--json", "as_json", is_flag=True)
@_serving_options
def export_triton(artifacts: tuple[Path, ...], out: Path, bundled: bool, plain: str | None, overwrite: bool,
                  as_json: bool, names: tuple[str, ...], **opts: Any) -> None:
    """Write a Triton model repository serving ARTIFACTS (config.pbtxt + Python-backend model.py each)."""
    from edgekit.serving import export_repository

    models = export_repository(list(artifacts), out, names=names, options=_serve_options(**opts), bundled=bundled,
                               overwrite=overwrite, plain=plain)
    run = f"tritonserver --model-repository {out.absolute()}"
    if bundled:
        from edgekit.serving.bundle import find_bundle
        from edgekit.serving.pyenv import serving_env

        bundle = find_bundle()
        run = f"{bundle.server} --model-repository {out.absolute()} --backend-directory {serving_env(bundle) / 'backends'}"
    data = {"repository": str(out.absolute()), "models": [m.name for m in models], "run": run}
    _emit(data, as_json, lambda d: f"wrote {d['repository']}: {', '.join(d['models'])}\nrun: {d['run']}")


def main() -> None:
    cli(prog_name="edgekit")


if __name__ == "__main__":
    main()
