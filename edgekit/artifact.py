"""Artifact folders: written atomically, opened only after every file is verified.

Writing: `staging(out, overwrite)` hands out a temporary folder beside `out` (same filesystem,
so the final rename is atomic). Only when the body of the `with` finishes is the folder moved into
place; on any error, or a kill, the user's old artifact is untouched and the temporary folder is
left under a `.edgekit-tmp-*` name that the next convert into the same parent cleans up.

Reading: `open_artifact(path)` checks the manifest's format and the sha256 of every listed file,
and that every path stays inside the folder. Nothing in an artifact is ever executed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ArtifactError, ChecksumError, OutputExistsError
from edgekit.manifest import MANIFEST_NAME, Manifest

_TMP_PREFIX = ".edgekit-tmp-"
_OLD_PREFIX = ".edgekit-old-"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` except the manifest and engines (built on the device)."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != MANIFEST_NAME and not rel.startswith("engines/"):
            out[rel] = sha256_file(p)
    return out


def _clean_stale(parent: Path) -> None:
    # Leftovers of a convert that was killed: never the user's data, always ours.
    for p in parent.glob(_TMP_PREFIX + "*"):
        if p.is_dir() and time.time() - p.stat().st_mtime > 60:
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def staging(out: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success move it to `out` atomically."""
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"the output folder '{out}' already exists",
            fix="choose another folder, or pass overwrite=True (CLI: --overwrite)",
        )
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"the output '{out}' exists and is a file", fix="choose a folder path")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX + out.name + "-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        # Two renames: the old artifact is set aside, never deleted before the new one is in place.
        old = Path(tempfile.mkdtemp(prefix=_OLD_PREFIX + out.name + "-", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _inside(folder: Path, rel: str) -> Path:
    p = (folder / rel).resolve()
    if not p.is_relative_to(folder.resolve()):
        raise ArtifactError(
            f"the manifest names a file outside the artifact folder: '{rel}'",
            fix="this artifact was tampered with; convert the model again",
        )
    return p


@dataclass(frozen=True)
class Artifact:
    """A verified artifact folder and its manifest."""

    path: Path
    manifest: Manifest

    def file(self, rel: str) -> Path:
        return _inside(self.path, rel)


def open_artifact(path: str | os.PathLike[str], verify: bool = True) -> Artifact:
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(
            f"no artifact folder at '{folder}'",
            found="nothing there" if not folder.exists() else "a file, not a folder",
            fix="pass the folder written by `edgekit convert`",
        )
    manifest = Manifest.load(folder)
    for graph in manifest.graphs.values():
        if graph.file not in manifest.files:
            raise ArtifactError(f"the manifest lists graph file '{graph.file}' without a checksum")
    for rel, digest in manifest.files.items():
        p = _inside(folder, rel)
        if not p.is_file():
            raise ArtifactError(
                f"the artifact '{folder}' is missing '{rel}'",
                fix="copy the whole folder, or convert the model again",
            )
        if verify and sha256_file(p) != digest:
            raise ChecksumError(
                f"'{rel}' in '{folder}' does not match the sha256 in {MANIFEST_NAME}",
                found="the file was altered or truncated after convert",
                fix="copy the artifact again from its source, or convert the model again",
            )
    return Artifact(folder, manifest)
