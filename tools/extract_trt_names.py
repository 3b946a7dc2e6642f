"""Regenerate tests/data/trt_api_names.json: the names the real TensorRT and cuda-python bindings define.

The contract test (tests/test_trt_bindings_contract.py) checks every TensorRT / CUDA name that
edgekit's code uses against this list, so CI needs neither a GPU nor the wheels. Run this when a
new TensorRT major/minor is to be supported:

    python tools/extract_trt_names.py                     # pip download the wheels into a temp dir
    python tools/extract_trt_names.py --wheels DIR        # or read wheels already in DIR
    python tools/extract_trt_names.py --wheels DIR --check  # exit 1 if the committed list differs

(`tensorrt-cu12-bindings` 10.3 is not on PyPI, only on NVIDIA's index, so CI cannot fetch it; the
check runs where the wheels are at hand, not as a CI test that would always skip.)

Wheels read (cp311, manylinux x86_64; about 1.3 MB each for TensorRT, 8 MB for cuda-bindings):
`tensorrt-cu12-bindings==10.3.*` (JetPack 6), `tensorrt-cu13-bindings` (11.x), `cuda-bindings` 12.9 and 13.

TensorRT's bindings are a pybind11 extension that cannot be imported without libnvinfer, so the
names are read from the binary: pybind11 registers every class, method, property and enum value
under a NUL-terminated C string. The linker merges strings that are tails of others ("INPUT" is
stored as the end of "CONDITIONAL_INPUT"), so the test also accepts a name found as such a tail.
Names defined in Python by the package's `__init__.py` (`__version__`, `nptype`) are added via ast.
cuda-bindings 12.x ships its Cython source (`runtime.pyx`): its def/class names and enum members are
read; 13.x ships none, so its extension's string table and the enum members in `cyruntime.pxd` are.
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = {
    "tensorrt": ["tensorrt-cu12-bindings==10.3.*", "tensorrt-cu13-bindings"],
    "cuda.bindings.runtime": ["cuda-bindings==12.9.*", "cuda-bindings==13.*"],
}
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "trt_api_names.json"
_IDENT = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*$")


def download(spec: str, dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.11", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux_2_24_x86_64", spec, "-d", str(dest)], check=True, capture_output=True)
    return find_wheel(dest, spec)


def find_wheel(folder: Path, spec: str) -> Path:
    name, _, version = spec.partition("==")
    found = sorted(folder.glob(f"{name.replace('-', '_')}-{version.rstrip('*') or ''}*.whl"))
    if not found:
        raise SystemExit(f"no wheel for {spec} in {folder}")
    return found[-1]


def tensorrt_names(wheel: Path) -> tuple[str, list[str]]:
    with zipfile.ZipFile(wheel) as z:
        so = z.read(next(n for n in z.namelist() if n.endswith("/tensorrt.so")))
        init = z.read(next(n for n in z.namelist() if n.endswith("tensorrt_bindings/__init__.py"))).decode()
    names = {s.decode() for s in so.split(b"\0") if _IDENT.match(s) and not s.startswith(b"_Z")}
    tree = ast.parse(init)
    version = ""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                    if t.id == "__version__" and isinstance(node.value, ast.Constant):
                        version = str(node.value.value)
    return version, sorted(names)


def cudart_names(wheel: Path) -> tuple[str, list[str]]:
    with zipfile.ZipFile(wheel) as z:
        files = set(z.namelist())
        version_py = z.read("cuda/bindings/_version.py").decode()
        if "cuda/bindings/runtime.pyx" in files:  # 12.x ships its Cython source
            pyx = z.read("cuda/bindings/runtime.pyx").decode()
            names = set(re.findall(r"^(?:cdef |cpdef )?(?:def|class)\s+(\w+)", pyx, re.M))
            names |= set(re.findall(r"^\s{4}(?:cdef |cpdef )?def\s+(\w+)", pyx, re.M))  # properties, methods
            names |= set(re.findall(r"^\s{4}(\w+)\s*=", pyx, re.M))  # enum members
        else:  # 13.x: the extension's string table, plus the enum members its .pxd declares
            so = z.read(next(n for n in files if re.match(r"cuda/bindings/runtime\.cpython.*\.so$", n)))
            names = {s.decode() for s in so.split(b"\0") if _IDENT.match(s)}
            pxd = z.read("cuda/bindings/cyruntime.pxd").decode()
            names |= set(re.findall(r"\b(cuda\w+)\b", pxd))
    version = re.search(r"""__version__\s*=\s*["']([^"']+)""", version_py)
    return version.group(1) if version else wheel.name.split("-")[1], sorted(names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheels", type=Path, help="folder holding the wheels (else pip download them)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args()
    data: dict[str, dict[str, dict[str, object]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for module, specs in WHEELS.items():
            for spec in specs:
                wheel = find_wheel(args.wheels, spec) if args.wheels else download(spec, Path(tmp))
                version, names = (tensorrt_names if module == "tensorrt" else cudart_names)(wheel)
                data.setdefault(module, {})[version] = {"wheel": wheel.name, "names": names}
                print(f"{module} {version}: {len(names)} names from {wheel.name}")
    if args.check:
        same = json.loads(args.out.read_text(encoding="utf-8")) == json.loads(json.dumps(data))
        print(f"{args.out}: {'matches' if same else 'DIFFERS from'} the wheels")
        sys.exit(0 if same else 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
