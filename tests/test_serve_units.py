"""Serving pieces that need no running server: layering, the stub's environment, option checks,
and the classify handler's batching of several requests (as Triton's dynamic batcher hands them)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from reliability_models import converted
from serve_support import png_bytes, serving_or_skip

_CALL = r"""
import json, sys
import numpy as np
import edgekit
model = edgekit.load(sys.argv[1], device="cpu")
model.classify(np.zeros((24, 24, 3), np.uint8), top_k=2)
before = "edgekit.serving" in sys.modules
serve = edgekit.serve  # the lazy name resolves to edgekit.serving without any Triton client or server package
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tritonclient", "pytriton", "grpc", "gevent"))
print(json.dumps({"bad": bad, "serving": [before, "edgekit.serving" in sys.modules]}))
"""


def test_load_and_call_never_import_triton(tmp_path_factory: pytest.TempPathFactory) -> None:
    art = converted(tmp_path_factory, "image")
    r = subprocess.run([sys.executable, "-c", _CALL, str(art)], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path_factory.getbasetemp())
    assert r.returncode == 0, r.stderr[-2000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"bad": [], "serving": [False, True]}
    src = (Path(edgekit.__file__).parent / "api.py").read_text() + (Path(edgekit.__file__).parent / "__init__.py").read_text()
    assert "tritonclient" not in src and "pytriton" not in src


def test_classify_handler_batches_requests_and_isolates_bad_ones(tmp_path_factory: pytest.TempPathFactory) -> None:
    from edgekit.serving.handlers import ClassifyHandler

    for kind in ("image", "text"):
        model = edgekit.load(converted(tmp_path_factory, kind), device="cpu")
        h = ClassifyHandler(model)
        if kind == "image":
            good = [[png_bytes(1)], [png_bytes(2), png_bytes(3, size=(9, 40))]]
            requests = [{"IMAGE": np.array([[b] for b in g], dtype=object)} for g in good]
            requests.insert(1, {"IMAGE": np.array([[b"junk"]], dtype=object)})
            refs = [model.classify([_pil(b) for b in g], top_k=5) for g in good]
        else:
            good = [["the cat"], ["a big red dog ran on the log", "sad"]]  # padded to different lengths
            requests = [{"TEXT": np.array([[t.encode()] for t in g], dtype=object), "TOP_K": np.array([[2]] * len(g))}
                        for g in good]
            requests.insert(1, {"TEXT": np.array([[b"x"]], dtype=object), "TOP_K": np.array([[0]])})
            refs = [model.classify(g, top_k=2) for g in good]
        out = h.run_batch(requests)
        assert isinstance(out[1], edgekit.InputError)
        for got, ref in zip([out[0], out[2]], refs):
            assert got["LABELS"].tolist() == [[p.label.encode() for p in row] for row in ref]
            np.testing.assert_allclose(got["SCORES"], [[p.score for p in row] for row in ref], rtol=0, atol=1e-6)


def _pil(data: bytes):  # noqa: ANN202
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data))


def test_serve_options_and_names_are_checked() -> None:
    from edgekit.serving.config import ServeOptions, check_name

    with pytest.raises(edgekit.ConfigError, match="instances must be at least 1"):
        ServeOptions(instances=0)
    for bad in ("", "a b", "x/y", "gpt_stream", "-x"):
        with pytest.raises(edgekit.ConfigError, match="cannot name a Triton model"):
            check_name(bad)
    assert check_name("cnn-int8.v2") == "cnn-int8.v2"


def test_the_stub_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """numpy 1.x first, this interpreter's libpython, this environment's edgekit, no global site-packages."""
    import site
    import sysconfig

    from edgekit.serving.bundle import find_bundle
    from edgekit.serving.pyenv import serving_env

    serving_or_skip()
    env = serving_env(find_bundle())
    probe = "import json, sys, numpy, edgekit; print(json.dumps([numpy.__version__, edgekit.__file__, sys.path]))"
    r = subprocess.run([str(env / "bin" / "python3"), "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np_version, ek_file, path = json.loads(r.stdout)
    assert np_version.startswith("1."), np_version
    assert Path(ek_file).resolve() == Path(edgekit.__file__).resolve()
    own = str(env / "lib")
    assert any(p.startswith(own) for p in path[: path.index(site.getsitepackages()[0])])  # ENV's numpy first
    if sys.prefix != sys.base_prefix:  # in a venv: the base interpreter's site-packages stay out
        base_site = sysconfig.get_path("purelib", vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
        assert base_site not in path
    lib = env / "lib" / f"libpython{sys.version_info[0]}.{sys.version_info[1]}.so.1.0"
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert lib.resolve() == (Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")).resolve()
    assert (env / "backends" / "python" / "triton_python_backend_stub").resolve().is_file()
    assert (env / "bin" / "activate").is_file()  # Triton sources it before starting the stub
