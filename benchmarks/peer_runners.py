"""The contenders of benchmarks/bench_peers.py, each a function: new tokens -> the ids it made (greedy, eos
ignored), built in the contender's own process from its artifact and the prompt ids, at THREADS threads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from edgekit.errors import UnsupportedError

THREADS = 2

Run = Callable[[int], list[int]]  # new tokens -> the ids it made, greedy, eos ignored


def torch_run(path: Path, ids: list[int]) -> Run:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    t_ids = torch.tensor([ids])

    def run(n: int) -> list[int]:
        with torch.inference_mode():
            out = model.generate(input_ids=t_ids, attention_mask=torch.ones_like(t_ids), max_new_tokens=n,
                                 min_new_tokens=n, do_sample=False, pad_token_id=0)
        return out[0, len(ids):].tolist()

    return run


def edgekit_run(path: Path, ids: list[int]) -> Run:
    import numpy as np

    import edgekit

    m = edgekit.load(path, device="cpu")
    a = np.asarray([ids], dtype=np.int64)
    return lambda n: np.asarray(m.generate(input_ids=a, max_new_tokens=n, eos_token_id=[]))[0, len(ids):].tolist()


def genai_run(path: Path, ids: list[int]) -> Run:
    import numpy as np
    import onnxruntime_genai as og

    cfg = og.Config(str(path))
    cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": THREADS}}}}))
    model = og.Model(cfg)
    a = np.asarray([ids], dtype=np.int32)

    def run(n: int) -> list[int]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + n, min_length=len(ids) + n, do_sample=False)
        g = og.Generator(model, params)
        g.append_tokens(a)
        while not g.is_done():
            g.generate_next_token()
        return [int(t) for t in g.get_sequence(0)[len(ids):]]

    return run


def llama_run(path: Path, ids: list[int], new: int) -> Run:
    from llama_cpp import Llama

    # llama-cpp-python's defaults but the threads (and a context that holds prompt + new; logits_all off,
    # mmap on, its default batch of 512 >= the prompt).
    llm = Llama(model_path=str(path), n_ctx=len(ids) + new + 8, n_threads=THREADS, n_threads_batch=THREADS,
                n_batch=max(512, len(ids)), verbose=False)

    def run(n: int) -> list[int]:
        llm.reset()  # n_tokens = 0: generate evaluates the whole prompt again (no prefix-cache hit)
        out: list[int] = []
        # generate() never stops at eos itself; temp 0 is llama.cpp's greedy sampler.
        for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
            out.append(int(t))
            if len(out) == n:
                break
        return out

    return run


def peak_rss_mb() -> float:
    """VmHWM: this process's peak resident set so far (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise UnsupportedError("peak RSS from /proc/self/status", found="no VmHWM line", fix="run on Linux")
