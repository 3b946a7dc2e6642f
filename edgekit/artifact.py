"""Artifact folders: written atomically, opened only after every file is verified.

Writing: `staging(out, overwrite)` hands out a temporary folder beside `out` (same filesystem,
so the final rename is atomic). Only when the body of the `with` finishes is the folder moved into
place; on any error the temporary folder is removed, and after a kill the user's old artifact is
untouched (or, killed between the two final renames, put back) by the next convert into the same
parent, which also removes the dead convert's `.edgekit-tmp-*` folder. Folders are named by their
owner's pid and start time, so a pid reused by another process (or by the next convert itself, as
in a container) does not keep a dead convert's folder, and a live convert's is never removed.

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


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process: /proc/<pid>/stat fields 3 and 22
    (proc(5)). With the pid the start time names one process: a reused pid starts later. None where
    it cannot be read (no such process, another user's under hidepid, or no /proc: not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and ')': the fields after the last ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def _owner() -> str:
    """This process as staging folders name it: <pid>.<start time>, or <pid> where /proc is absent."""
    stat = _proc_stat(os.getpid())
    return f"{os.getpid()}.{stat[1]}" if stat else str(os.getpid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_dead(p: Path, prefix: str) -> bool:
    """Staging folders are named <prefix><pid>[.<start time>]-<name>-<random>: only a dead owner's are
    stale. A live pid whose start time differs is another process that got the pid (reuse)."""
    owner = p.name[len(prefix):].split("-", 1)[0]
    pid, _, token = owner.partition(".")
    if not pid.isdigit() or (token and not token.isdigit()):
        return False  # not a name staging() makes: never removed
    if not _pid_alive(int(pid)):
        return True
    stat = _proc_stat(int(pid))
    if stat is None:  # alive but unreadable: its start time is unknown, so it may be the owner
        return False
    state, started = stat
    return state in ("Z", "X") or (bool(token) and started != token)  # killed, not reaped; or the pid reused


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
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{_owner()}-{out.name}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        # Two renames: the old artifact is set aside, never deleted before the new one is in place.
        old = Path(tempfile.mkdtemp(prefix=f"{_OLD_PREFIX}{_owner()}-{out.name}-", dir=out.parent))
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
