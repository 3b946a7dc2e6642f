"""The Python environment Triton's Python-backend stub runs edgekit in (its `EXECUTION_ENV_PATH`).

Two facts about the stub of Triton 2.51 (the one nvidia-pytriton ships) shape it:

- The stub links `libpython3.X.so.1.0` through the loader path, then imports the standard library of
  whatever `python3` is first on PATH. With a libpython of another patch release than that
  interpreter, model load fails deep in multiprocessing (`'_thread.RLock' object has no attribute
  '_recursion_count'`). Triton starts a stub of an EXECUTION_ENV_PATH folder as
  `source ENV/bin/activate && LD_LIBRARY_PATH=ENV/lib:... stub`, so ENV/lib holds a link to *this*
  interpreter's libpython and ENV/bin/python3 is this interpreter.
- The stub is built on pybind11 2.10, which reads numpy array descriptors in the numpy 1 layout:
  with numpy 2 imported, every output fails ("output tensor shape does not match size of output").
  When this environment has numpy 2, ENV gets numpy 1.x of its own, first on its path.

Triton's Python backend also wants the stub inside its backend directory, so ENV/backends/python
links the bundled backend with the stub for this interpreter (links keep the stub's RPATH to the
wheel's libraries working): `tritonserver --backend-directory ENV/backends`.

ENV is a venv without system site-packages: the stub never sees the interpreter's global
site-packages. A .pth file adds this environment's site-packages *behind* ENV's own, so the stub
imports this edgekit and its runtime (onnxruntime, tokenizers, ...) and ENV's numpy. It is built
once per interpreter and environment, under a lock, in the cache folder (EDGEKIT_CACHE, else
$XDG_CACHE_HOME/edgekit or ~/.cache/edgekit).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from edgekit.errors import BackendUnavailableError
from edgekit.serving.bundle import TritonBundle

NUMPY_FOR_STUB = "numpy>=1.24,<2"  # the pybind11 2.10 inside the stub reads numpy 1 descriptors only
_MARKER = "edgekit-env.json"


def cache_root() -> Path:
    if os.environ.get("EDGEKIT_CACHE"):
        return Path(os.environ["EDGEKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit"


def site_dirs() -> list[str]:
    """This environment's site-packages (and the user site when it is on), as the stub must see them."""
    dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    if site.ENABLE_USER_SITE and Path(site.getusersitepackages()).is_dir():
        dirs.append(site.getusersitepackages())
    return dirs


def libpython() -> Path | None:
    """The libpython of this very interpreter; None when the loader's default one is the same release."""
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        lib = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
        if lib.is_file():
            return lib.resolve()
    # A statically linked interpreter (e.g. Debian's /usr/bin/python3.X): the system's shared
    # libpython serves only if it is the same release.
    probe = ("import ctypes, ctypes.util, sys; n = ctypes.util.find_library(sys.argv[1])\n"
             "if n is None: print('none')  # CDLL(None) would be this very (static) interpreter\n"
             "else: l = ctypes.CDLL(n); l.Py_GetVersion.restype = ctypes.c_char_p; "
             "print(l.Py_GetVersion().decode().split()[0])")
    name = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    r = subprocess.run([sys.executable, "-c", probe, name], capture_output=True, text=True, timeout=60)
    found = r.stdout.strip() or "no shared libpython"
    if found == platform.python_version():
        return None
    raise BackendUnavailableError(
        f"Triton's Python backend stub needs lib{name}.so.1.0 of this Python ({platform.python_version()}), "
        "and this interpreter is statically linked",
        found=f"{sys.executable}; the system's lib{name}.so: {found}",
        fix="create the environment from a Python built with --enable-shared (Debian/Ubuntu's, conda's, or pyenv "
            "with PYTHON_CONFIGURE_OPTS=--enable-shared)")


def serving_env(bundle: TritonBundle) -> Path:
    """The stub's environment for this interpreter, environment and Triton, built on first use."""
    key = json.dumps([os.path.realpath(sys.executable), sys.version, site_dirs(), str(bundle.root), bundle.version])
    key = hashlib.sha256(key.encode()).hexdigest()
    root = cache_root() / "triton-env"
    env = root / f"py{platform.python_version()}-{key[:16]}"
    if (env / _MARKER).is_file():
        return env
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same one
        if not (env / _MARKER).is_file():
            _build(env, bundle)
    return env


def _build(env: Path, bundle: TritonBundle) -> None:
    # Built in place: bin/activate records the folder's own path, so it cannot be moved afterwards.
    shutil.rmtree(env, ignore_errors=True)
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env)
    pyver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    own_site = env / "lib" / pyver / "site-packages"
    lib = libpython()
    if lib is not None:
        (env / "lib" / f"lib{pyver}.so.1.0").symlink_to(lib)
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
               "--no-deps", "--target", str(own_site), NUMPY_FOR_STUB]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            shutil.rmtree(env, ignore_errors=True)
            raise BackendUnavailableError(
                f"could not install {NUMPY_FOR_STUB} into the serving environment: Triton 2.51's Python backend "
                "cannot return numpy 2 arrays", found=(r.stderr or r.stdout).strip()[-600:],
                fix="let pip reach a package index once (or PIP_FIND_LINKS=DIR with a numpy 1.26 wheel), "
                    "or install edgekit[serve] into an environment with numpy<2")
    backend = env / "backends" / "python"
    backend.mkdir(parents=True)
    for f in (bundle.backends / "python" / "libtriton_python.so", bundle.backends / "python" / "triton_python_backend_utils.py",
              bundle.stub()):
        (backend / f.name).symlink_to(f)
    adds = "; ".join(f"site.addsitedir({d!r})" for d in site_dirs())
    (own_site / "zz_edgekit_serving.pth").write_text(f"import site; {adds}\n")
    check = "import json, platform, numpy, edgekit; print(json.dumps([platform.python_version(), numpy.__version__]))"
    r = subprocess.run([str(env / "bin" / "python3"), "-c", check], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        shutil.rmtree(env, ignore_errors=True)
        raise BackendUnavailableError("the serving environment does not import edgekit",
                                      found=r.stderr.strip()[-600:], fix="reinstall edgekit[serve]")
    python, np_version = json.loads(r.stdout.strip().splitlines()[-1])
    (env / _MARKER).write_text(json.dumps({"python": python, "numpy": np_version, "libpython": str(lib or "system"),
                                           "interpreter": sys.executable, "site": site_dirs()}, indent=1))
