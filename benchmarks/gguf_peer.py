"""llama.cpp as a peer of benchmarks/bench_peers.py: GGUF files of a Hugging Face folder, made by llama.cpp's own tools.

`convert_hf_to_gguf.py` (with its `conversion/` package and the `gguf` package of the same tree) is not
in the llama-cpp-python wheel, only in its sdist (vendor/llama.cpp): the sdist of the installed version
is unpacked once into the benchmark's out folder (downloaded with pip unless --llama-sdist names it).
The converter writes F32 and Q8_0 itself; Q4_0 and Q4_1 come from llama.cpp's quantizer
(`llama_model_quantize`, the C function llama-cpp-python binds) on the F32 file, with its default
parameters, as `llama-quantize` makes them. llama-cpp-python is a benchmark dependency only
(pyproject's [bench] extra); it builds from source with cmake.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from edgekit.errors import ConfigError, ExportError, SourceError

CONVERTER_TYPES = ("f32", "q8_0")  # what convert_hf_to_gguf.py --outtype writes directly
QUANTIZED_TYPES = ("q4_0", "q4_1")  # what llama_model_quantize makes from the f32 file
# Paths in the sdist the converter needs: itself, its model classes and the gguf writer it imports.
_CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter_tree(out: Path, sdist: Path | None) -> Path:
    """vendor/llama.cpp of the installed llama-cpp-python's sdist, unpacked under `out` (once)."""
    import llama_cpp

    version = llama_cpp.__version__
    tree = out / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    if sdist is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={version}", "-d", str(out)], check=True)
        sdist = out / f"llama_cpp_python-{version}.tar.gz"
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                   and m.name[len(prefix):].startswith(_CONVERTER_PARTS)]
        if not members:
            raise SourceError(f"llama.cpp's converter in {sdist}", found=f"no {prefix}convert_hf_to_gguf.py",
                              fix=f"pass --llama-sdist llama-cpp-python {version}'s sdist (the installed version's)")
        tar.extractall(out, members=members, filter="data")
    return tree


def gguf_file(hf_folder: Path, out: Path, kind: str, sdist: Path | None = None) -> Path:
    """`out`/model-`kind`.gguf made from `hf_folder` (cached): f32/q8_0 by the converter, q4_0/q4_1 by the quantizer."""
    path = out / f"model-{kind}.gguf"
    if path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".gguf.tmp")
    if kind in CONVERTER_TYPES:
        tree = converter_tree(out, sdist)
        done = subprocess.run([sys.executable, str(tree / "convert_hf_to_gguf.py"), str(hf_folder), "--outtype", kind,
                               "--outfile", str(tmp)], capture_output=True, text=True)
        if done.returncode:
            raise ExportError(f"convert_hf_to_gguf.py --outtype {kind} of {hf_folder}", found=done.stderr[-3000:])
    elif kind in QUANTIZED_TYPES:
        import llama_cpp

        f32 = gguf_file(hf_folder, out, "f32", sdist)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
        params.nthread = 2
        if llama_cpp.llama_model_quantize(str(f32).encode(), str(tmp).encode(), params) != 0:
            raise ExportError(f"llama_model_quantize {f32} -> {kind}", found="a non-zero return (its log is on stderr)")
    else:
        raise ConfigError(f"GGUF type {kind!r}", found=f"the types made here: {CONVERTER_TYPES + QUANTIZED_TYPES}")
    tmp.rename(path)
    return path


def weight_bytes(gguf: Path, tree: Path) -> int:
    """Bytes of tensors one decode step reads: all but the token-embedding table a lookup reads one row of,
    unless the model has no output.weight (tied embeddings: the table is then also the output projection)."""
    sys.path.insert(0, str(tree / "gguf-py"))
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(gguf).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())
