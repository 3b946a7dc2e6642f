"""Triton model repositories for edgekit artifacts: `edgekit export triton` and the one `serve` writes.

    REPO/NAME/config.pbtxt            the tensors of the artifact's task (serving/config.py)
    REPO/NAME/1/model.py              one import: the Python-backend model is edgekit.serving.backend
    REPO/NAME/1/artifact/             the artifact, copied (export) -- or referenced by path (serve)
    REPO/NAME_stream/...              generate, CTC and Whisper: the decoupled twin for streaming

The repository is portable: NVIDIA's Triton container serves it once edgekit is installed in the
container's Python. `bundled=True` also points every model at this machine's serving environment
(EXECUTION_ENV_PATH, serving/pyenv.py), so that the tritonserver from nvidia-pytriton serves REPO
as it is with `--backend-directory ENV/backends` (`edgekit export triton --bundled` prints the command).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.artifact import Artifact, open_artifact, staging
from edgekit.errors import ConfigError
from edgekit.serving.config import ServeOptions, TritonModel, models_for

MODEL_PY = '"""Triton Python-backend model: the edgekit artifact named in config.pbtxt (EDGEKIT_ARTIFACT)."""\n' \
           "from edgekit.serving.backend import TritonPythonModel  # noqa: F401\n"


@dataclass(frozen=True)
class Entry:
    """One artifact to serve and the name its model gets."""

    artifact: Artifact
    name: str


def entries(artifacts: Sequence[str | os.PathLike[str]], names: Sequence[str] | None = None) -> list[Entry]:
    """Open (and verify) each artifact; names default to the artifact folders' names, and must differ."""
    names = list(names or [])
    if len(names) > len(artifacts):
        raise ConfigError("more names than artifacts", found=f"{len(names)} names for {len(artifacts)} artifacts")
    if not artifacts:
        raise ConfigError("nothing to serve", fix="pass at least one artifact folder")
    out = []
    for i, path in enumerate(artifacts):
        art = open_artifact(path)
        out.append(Entry(art, names[i] if i < len(names) else art.path.resolve().name))
    seen = [e.name for e in out]
    if len(set(seen)) != len(seen):
        raise ConfigError("two artifacts would get the same model name", found=", ".join(seen),
                          fix="give each a name with --name (in order)")
    return out


def write_models(repo: Path, items: list[Entry], opts: ServeOptions, copy: bool, env: Path | None,
                 plain: str | None = None) -> list[TritonModel]:
    """Write each entry's model folders into `repo` (which exists); `plain`: serving/plain.py."""
    written = []
    for e in items:
        art_ref = "1/artifact" if copy else str(e.artifact.path.resolve())
        stream_ref = f"../{e.name}/1/artifact" if copy else art_ref
        models = models_for(e.name, e.artifact, art_ref, stream_ref)
        if plain is not None:
            from edgekit.serving.plain import PLAIN_SUFFIX, plain_model

            text, files = plain_model(e.artifact, e.name, plain, opts)
            (repo / (e.name + PLAIN_SUFFIX) / "1").mkdir(parents=True)
            (repo / (e.name + PLAIN_SUFFIX) / "config.pbtxt").write_text(text)
            for src, dst in files:
                shutil.copy2(src, repo / (e.name + PLAIN_SUFFIX) / "1" / dst)
            models = [dataclasses.replace(models[0], plain=e.name + PLAIN_SUFFIX)]
        for m in models:
            folder = repo / m.name
            (folder / "1").mkdir(parents=True)
            (folder / "config.pbtxt").write_text(m.config(e.artifact, opts, None if env is None else str(env)))
            (folder / "1" / "model.py").write_text(MODEL_PY)
            if copy and not m.stream:
                shutil.copytree(e.artifact.path, folder / "1" / "artifact", ignore=shutil.ignore_patterns(".edgekit-*"))
            written.append(m)
    return written


def export_repository(artifacts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                      names: Sequence[str] | None = None, options: ServeOptions | None = None,
                      bundled: bool = False, overwrite: bool = False, plain: str | None = None) -> list[TritonModel]:
    """Write a Triton model repository serving `artifacts` to `out` (atomically); returns its models.

    `plain="onnxruntime"|"tensorrt"` (classifiers): the graph becomes Triton's own NAME_model, and
    NAME keeps edgekit's pre- and post-processing around it (serving/plain.py)."""
    if plain is not None and plain not in ("onnxruntime", "tensorrt"):
        raise ConfigError("plain must be 'onnxruntime' or 'tensorrt'", found=repr(plain))
    items = entries(artifacts, names)
    env = None
    if bundled:
        from edgekit.serving.bundle import find_bundle
        from edgekit.serving.pyenv import serving_env

        env = serving_env(find_bundle())
    with staging(out, overwrite=overwrite) as tmp:
        return write_models(tmp, items, options or ServeOptions(), copy=True, env=env, plain=plain)
