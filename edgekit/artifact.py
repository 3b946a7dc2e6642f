"""Artifact folders: written atomically, opened only after every file is verified.

Writing: `staging(out, overwrite)` hands out a temporary folder beside `out` (same filesystem,
so the final rename is atomic). Only when the body of the `with` finishes is the folder moved into
place; on any error the temporary folder is removed, and after a kill the user's old artifact is
untouched (or, killed between the two final renames, put back) by the next convert into the same
parent, which also removes the dead convert's `.edgekit-tmp-*` folder.

Reading: `open_artifact(path)` checks the manifest's format and the sha256 of every listed file,
and that every path stays inside the folder. Nothing in an artifact is ever executed.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_dead(p: Path, prefix: str) -> bool:
    # Staging folders are named <prefix><pid>-<name>-<random>: only a dead owner's are stale.
    pid = p.name[len(prefix):].split("-", 1)[0]
    return pid.isdigit() and not _pid_alive(int(pid))


def _recover(parent: Path, out: Path) -> None:
    """Clean up after a convert that was killed; never touch another live convert's folders."""
    for p in parent.glob(_TMP_PREFIX + "*"):
        if p.is_dir() and _owner_dead(p, _TMP_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
    for p in parent.glob(_OLD_PREFIX + "*"):
        if not (p.is_dir() and _owner_dead(p, _OLD_PREFIX)):
            continue
        name = p.name[len(_OLD_PREFIX):].split("-", 1)[1].rsplit("-", 1)[0]
        target = parent / name
        if target.exists():
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.replace(p, target)  # killed between the two renames: put the old artifact back


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
    _recover(out.parent, out)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-{out.name}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        # Two renames: the old artifact is set aside, never deleted before the new one is in place.
        old = Path(tempfile.mkdtemp(prefix=f"{_OLD_PREFIX}{os.getpid()}-{out.name}-", dir=out.parent))
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
    for file in manifest.graph_files():
        if file not in manifest.files:
            raise ArtifactError(f"the manifest lists graph file '{file}' without a checksum")
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
    # Weights named by path inside the ONNX file must be checksummed files of this folder.
    from edgekit.external_data import check_external_data

    for file in manifest.graph_files():
        check_external_data(folder, file, set(manifest.files))
    return Artifact(folder, manifest)
