"""Atomic file outputs: written under a temporary name beside the target, renamed on success.

Every file the plugin writes goes through here, so a failure or a cancel leaves no partial file
and never replaces an earlier result with half of a new one. Temporary files are created by the
writer itself (GDAL, ``open``), so the outputs get the usual permissions of the user's umask.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

SIDECARS = (".aux.xml", ".ovr", ".msk")


#: Longest file name (bytes, UTF-8) a temporary name may have, so that GDAL's longest sidecar
#: of it still fits the usual 255 a name (ext4, NTFS, APFS).
MAX_NAME_BYTES = 255 - max(len(ext) for ext in SIDECARS)
#: Windows paths are limited to 259 characters unless long paths are enabled.
MAX_WINDOWS_PATH = 259
WINDOWS = os.name == "nt"


def temporary_name(path: str | os.PathLike[str], kind: str = "partial") -> Path:
    """A fresh name beside ``path``: ``<stem>.<kind>-<pid>-<random><suffix>`` (not created).

    The stem is shortened where the name would pass :data:`MAX_NAME_BYTES` (on Windows also
    where the path would pass :data:`MAX_WINDOWS_PATH` and ``path`` does not), so a name
    that can be written has a temporary name that can be written too.
    """
    path = Path(path)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tail = f".{kind}-{token}{path.suffix or '.tif'}"
    stem = path.stem

    def too_long(name: str) -> bool:
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            return True
        full = len(str(path.parent / name))
        return WINDOWS and full > MAX_WINDOWS_PATH >= len(str(path))

    while stem and too_long(stem + tail):
        stem = stem[:-1]
    return path.with_name(stem + tail)


def _in_use_message(src: Path, dst: Path, exc: OSError, restored: bool) -> str:
    """What a failed rename in :meth:`StagedOutputs.commit` means, and what to do."""
    final = src if ".replaced-" in dst.name else dst
    outcome = (
        "No output was changed."
        if restored
        else "Some earlier outputs could not be put back: look for *.replaced-* files in "
        f"{final.parent}."
    )
    return (
        f"cannot replace {final}: {exc.strerror or exc}. It is probably open in another "
        "program (on Windows a raster still loaded as a layer in QGIS, e.g. the output of an "
        "earlier run, or a file open in Excel, cannot be replaced): remove that layer from "
        f"the project or close the file, or choose another output name, and run again. {outcome}"
    )


def with_sidecars(path: str | os.PathLike[str]) -> tuple[Path, ...]:
    """``path`` and the names of GDAL's sidecars of it (``.aux.xml``, ``.ovr``, ``.msk``)."""
    return (Path(path), *(Path(f"{path}{ext}") for ext in SIDECARS))


def remove_with_sidecars(path: str | os.PathLike[str], strict: bool = True) -> None:
    """Remove ``path`` and GDAL's sidecars of it (``.aux.xml``, ``.ovr``, ``.msk``), if there.

    ``strict=False``: a file that cannot be removed (on Windows, one still open) is left,
    without an error, so that cleaning up after a failure never hides that failure.
    """
    for leftover in with_sidecars(path):
        if not os.path.lexists(leftover):  # also a sidecar name too long to exist
            continue
        try:
            leftover.unlink(missing_ok=True)
        except OSError:
            if strict:
                raise


def check_destination(path: str | os.PathLike[str], folder: bool = False) -> None:
    """Raise ``ValueError`` when ``path`` cannot be written, before any work is done.

    Its folder (``path`` itself with ``folder``: a folder of outputs) must exist or be
    creatable under its nearest existing ancestor, which must be a writable folder (a
    temporary file is made and removed there: permissions alone say yes to root in ``/proc``);
    a file destination must not be a folder. The writers create missing folders.
    """
    target = Path(path)
    for part in target.parts:
        size = len(part) if WINDOWS else len(part.encode("utf-8"))
        if size > 255:
            raise ValueError(
                f"cannot write {target}: the name {part[:40]}... is {size} "
                f"{'characters' if WINDOWS else 'bytes'} long, file systems allow 255; "
                "choose a shorter name"
            )
    if folder and target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file, not a folder; choose a folder for the outputs")
    existing = target if folder else target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():  # e.g. a Windows drive or network share that is not there
        raise ValueError(
            f"cannot write {target}: {existing} does not exist (a drive or share that is not "
            "connected?); choose an output path on an available disk"
        )
    if not existing.is_dir():
        raise ValueError(
            f"cannot write {target}: {existing} is a file, not a folder; choose an output path "
            "in a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write {target}: no permission to write in {existing}; choose a folder you "
            "can write to"
        )
    try:  # os.access answers yes to root anywhere (/proc, /sys): a file made and gone at once
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(
            f"cannot write {target}: a file cannot be created in {existing} "
            f"({exc.strerror or exc}); choose a folder you can write to"
        ) from None
    if not folder and target.is_dir():
        raise ValueError(f"{target} is a folder; give a file name")


class StagedOutputs:
    """Several output files written under temporary names and renamed together at the end.

    ``path(final)`` hands out the temporary name to write ``final`` under; :meth:`commit`
    renames them all (with their GDAL sidecars) once everything is written; :meth:`discard`
    removes what is left.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def path(self, final: str | os.PathLike[str]) -> Path:
        """The temporary name to write ``final`` under (its folder is created if missing)."""
        target = Path(final)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(target)
        self._staged.append((tmp, target))
        return tmp

    def commit(self) -> None:
        """Rename every staged file to its final name (an earlier file of that name is replaced).

        All or nothing: the earlier files (and their GDAL sidecars) are first moved aside, then
        the new ones (with theirs) moved in, then the earlier ones removed. On Windows a file
        that is open (a raster still loaded as a QGIS layer, a table open in Excel) can be
        neither renamed nor replaced: that fails at the first step, whatever was moved is put
        back, and the error names the file and what to do.
        """
        for tmp, final in self._staged:
            if not tmp.exists():
                raise ValueError(f"nothing was written to {final}")
        aside = [
            (old, temporary_name(old, "replaced"))
            for _, final in self._staged
            for old in with_sidecars(final)
            if os.path.lexists(old)  # False for a sidecar name too long to exist
        ]
        moves = aside + [  # GDAL's side files belong to the file (PNG: its georeference)
            (new, dst)
            for tmp, final in self._staged
            for new, dst in zip(with_sidecars(tmp), with_sidecars(final))
            if os.path.lexists(new)
        ]
        for i, (src, dst) in enumerate(moves):
            try:
                os.replace(src, dst)
            except OSError as exc:
                restored = True
                for back, moved in reversed(moves[:i]):
                    try:
                        os.replace(moved, back)
                    except OSError:
                        restored = False
                raise ValueError(_in_use_message(src, dst, exc, restored)) from exc
        for _, backup in aside:
            with contextlib.suppress(OSError):  # best effort: the new outputs are in place
                backup.unlink()

    def discard(self) -> None:
        """Remove the temporary files still there (and GDAL's sidecars of them).

        Best effort: it runs while an error propagates, and a temporary file the failed writer
        still holds open cannot be removed on Windows; raising here would replace the error
        that says what went wrong with 'The process cannot access the file'.
        """
        for tmp, _ in self._staged:
            remove_with_sidecars(tmp, strict=False)


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """A :class:`StagedOutputs` committed when the block succeeds and discarded in any case."""
    stage = StagedOutputs()
    try:
        yield stage
        stage.commit()
    finally:
        stage.discard()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success, else remove it.

    Cancellation (an exception raised inside the block) therefore leaves no partial file and an
    earlier ``path`` intact. The folder is created if missing. GDAL sidecars of the temporary
    file (``.aux.xml``, ``.ovr``, ``.msk``) go with it: renamed on success (an earlier
    ``path``'s are replaced or removed), removed on failure.
    """
    with staged_outputs() as stage:
        yield stage.path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
    return Path(path)


#: Parts of a shapefile a vector writer creates beside the ``.shp`` (QGIS's spatial index too).
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".qmd")
#: Files SQLite (GeoPackage, SpatiaLite) keeps beside a database while it is written.
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")


def written_in_place(path: str | os.PathLike[str]) -> tuple[Path, ...]:
    """``path`` and the files a vector writer makes beside it (a shapefile's parts, journals)."""
    p = Path(path)
    if p.suffix.lower() == ".shp":
        return tuple(p.with_suffix(ext) for ext in SHAPEFILE_PARTS)
    return (p, *(Path(f"{p}{ext}") for ext in SQLITE_SIDECARS))


@contextlib.contextmanager
def kept_until_replaced(path: str | os.PathLike[str]) -> Iterator[None]:
    """Keep an earlier ``path`` for a writer that can only write in place (a QGIS sink).

    The earlier file (with the parts :func:`written_in_place` names) is moved aside on entry;
    if the block fails, what it wrote under those names is removed and the earlier file put
    back; once it succeeds the earlier file is removed. Entered right before the writer, as
    the last step of a :func:`staged_outputs` block (and exited after it), it makes that
    output all or nothing with the staged ones.
    """
    names = written_in_place(path)
    aside: list[tuple[Path, Path]] = []

    def put_back(written: bool) -> None:
        for name in names if written else ():  # best effort: the error in flight says why
            with contextlib.suppress(OSError):
                if os.path.lexists(name):
                    name.unlink()
        for name, backup in reversed(aside):
            with contextlib.suppress(OSError):
                os.replace(backup, name)

    for name in names:
        if os.path.lexists(name):
            backup = temporary_name(name, "replaced")
            try:
                os.replace(name, backup)
            except OSError as exc:  # nothing written yet: only what was moved goes back
                put_back(written=False)
                raise ValueError(_in_use_message(name, backup, exc, restored=True)) from exc
            aside.append((name, backup))
    try:
        yield
    except BaseException:
        put_back(written=True)
        raise
    for _, backup in aside:
        with contextlib.suppress(OSError):  # best effort: the new output is in place
            backup.unlink()
