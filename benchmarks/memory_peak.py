"""The memory estimate (edgekit/memory.py) against a real process: peak RSS of load + generate.

For each context N, a fresh interpreter imports edgekit (its RSS then is the baseline: Python, numpy),
loads the artifact on the CPU with max_context=N, and generates `--new` tokens after a prompt of
N - new random token ids, so the generator allocates the cache for N tokens and the prompt run is as
long as that context allows. Its peak RSS (VmHWM) less the baseline is what the model took; less the
estimate's weights, cache and prompt logits, it is the runtime's overhead (onnxruntime, activations),
the term edgekit/memory.py states as measured. A short prompt (--short) shows the load-and-decode
part alone.

    python benchmarks/memory_peak.py ART [ART...] [--context 2048 8192] [--new 32] [--short 16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

CHILD = r"""
import json, sys
import numpy as np

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

import edgekit
from edgekit.memory import estimate
art, context, prompt, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = status("VmRSS")
model = edgekit.load(art, device="cpu", max_context=context)
loaded = status("VmRSS")
vocab = int(model.decoder.outputs[0].shape[-1])
eos = set(model.contract.eos_token_id) | {model.contract.pad_token_id}
ids = np.random.default_rng(0).choice([i for i in range(vocab) if i not in eos], size=(1, prompt)).astype(np.int64)
out = model.generate(input_ids=ids, max_new_tokens=new, min_new_tokens=new)
est = estimate(model.artifact, "cpu", prompt + new, 1)
print(json.dumps({"baseline": base, "after_load": loaded, "peak": status("VmHWM"), "made": int(out.shape[1] - prompt),
                  "weights": est.weights_bytes, "cache": est.cache_bytes, "logits": est.logits_bytes,
                  "overhead_term": est.overhead_bytes, "total": est.total_bytes}))
"""


def measure(art: str, context: int, prompt: int, new: int) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-c", CHILD, art, str(context), str(prompt), str(new)],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    took = out["peak"] - out["baseline"]
    out.update(art=art, context=context, prompt=prompt, took=took,
               beyond=took - out["weights"] - out["cache"] - out["logits"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--context", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--short", type=int, default=16, help="prompt tokens of the short-prompt run (0: none)")
    a = ap.parse_args()
    mib = 1 << 20
    print("artifact | context | prompt | weights | cache | logits | estimate (with overhead) | peak - baseline | "
          "beyond weights+cache+logits | baseline (MiB)")
    for art in a.artifacts:
        runs = [(n, n - a.new) for n in a.context] + ([(a.short + a.new, a.short)] if a.short else [])
        for n, prompt in runs:
            r = measure(art, n, prompt, a.new)
            print(f"{art} | {n} | {prompt} | {r['weights'] / mib:.1f} | {r['cache'] / mib:.1f} | "
                  f"{r['logits'] / mib:.1f} | {r['total'] / mib:.1f} | {r['took'] / mib:.1f} | "
                  f"{r['beyond'] / mib:.1f} | {r['baseline'] / mib:.1f}", flush=True)
            print(json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
