"""Scans uploaded to the medical page: checks before anything parses them, and where they live.

- **Checks** (:func:`check_upload`): the file type by name and magic bytes, and its size.
- **A private folder per session** (:class:`SessionUploads`): ``tempfile.mkdtemp`` (mode 0700, a
  random name under the temp folder), files inside mode 0600, removed when the Streamlit session
  ends (a ``weakref.finalize`` on the object kept in the session's state, plus a check of the
  runtime's live sessions on every upload) or the process exits, and by :func:`sweep_stale` at app
  start for folders a killed server left behind (older than :data:`UPLOAD_TTL_HOURS`).
- **ZIP archives** (:func:`extract_zip`): at most :data:`MAX_FILES` files and
  :data:`MAX_EXTRACTED_MB` decompressed, refused from the archive's directory *before* anything is
  written (and archives expanding more than :data:`MAX_RATIO` times, the zip-bomb shape); while
  extracting, the bytes are counted again, so a header that lies stops the extraction at the limit.
  Entries with an absolute path, a ``..`` part or a symbolic link refuse the archive; files are
  written under numbered names (an entry's own name may carry a patient's name).
- **DICOM** (a ``.dcm`` slice or a ``.zip`` of a series) is read into a volume at once and written
  as NIfTI (geometry and voxels only); the raw files, which carry the patient's name, are deleted
  right after reading, also when reading fails.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import stat
import tempfile
import time
import weakref
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

from core.errors import UserInputError
from dashboards.text import md_code

MAX_UPLOAD_MB = 200          # one uploaded file (Streamlit's own server.maxUploadSize is 200 MB too)
MAX_EXTRACTED_MB = 1024      # everything one ZIP expands to
MAX_FILES = 2000             # files in one ZIP (a DICOM series is one file per slice)
MAX_RATIO = 100              # decompressed / compressed size of a ZIP; real DICOM series stay far below
RATIO_FLOOR_MB = 16          # ... checked only for archives expanding to more than this
UPLOAD_TTL_HOURS = 6         # sweep_stale removes upload folders untouched for longer
DIR_PREFIX = "suite-upload-"
LEGACY_DIR = "suite-dashboard-uploads"  # the shared, predictable folder older versions wrote to
_CHUNK = 1 << 20

# suffix -> what it is; checked on the name because browsers send arbitrary MIME types for these
ACCEPTED = {".nii": "NIfTI", ".nii.gz": "NIfTI (gzip)", ".nrrd": "NRRD", ".dcm": "DICOM slice",
            ".zip": "ZIP of a DICOM series"}
DICOM_SUFFIXES = (".dcm", ".zip")


class UploadError(UserInputError, ValueError):
    """An upload the page refuses; the message says why and what is allowed."""


def _code(name: str) -> str:
    """A file name in a message: a code span that a backtick or line break in the name cannot break, shortened past 120 characters."""
    return md_code(name, limit=120, empty="(no name)")


def upload_suffix(name: str) -> str:
    low = name.lower()
    for suffix in sorted(ACCEPTED, key=len, reverse=True):
        if low.endswith(suffix):
            return suffix
    raise UploadError(f"{_code(name)} is not a supported scan: expected one of {', '.join(ACCEPTED)} "
                      f"({', '.join(sorted(set(ACCEPTED.values())))}).")


def _gunzip_head(name: str, data: bytes, n: int) -> bytes:
    """The first ``n`` decompressed bytes of gzip ``data`` (only those are inflated)."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, n)
    except zlib.error as e:
        raise UploadError(f"{_code(name)} is not valid gzip-compressed data ({e}).") from None


def _check_nifti_header(name: str, head: bytes) -> None:
    """A NIfTI-1/2 header (read by nibabel), and a declared volume no bigger than :data:`MAX_EXTRACTED_MB`:
    checked before the reader inflates a .nii.gz (a few MB of gzip can declare, and expand to, many GB)."""
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    if len(head) < 348:
        raise UploadError(f"{_code(name)} is too short ({len(head)} bytes) to be a NIfTI file.")
    sizes = {int.from_bytes(head[:4], o) for o in ("little", "big")}
    if not sizes & {348, 540}:
        raise UploadError(f"{_code(name)} is not a NIfTI file (its header size field is neither 348 nor 540).")
    if 540 in sizes and len(head) < 540:
        raise UploadError(f"{_code(name)} is too short ({len(head)} bytes) for a NIfTI-2 header.")
    try:
        hdr = (nib.Nifti2Header if 540 in sizes else nib.Nifti1Header).from_fileobj(io.BytesIO(head), check=False)
        shape, itemsize = hdr.get_data_shape(), hdr.get_data_dtype().itemsize
    except (HeaderDataError, ValueError, TypeError) as e:
        raise UploadError(f"{_code(name)} has a damaged NIfTI header ({e}).") from None
    if not shape or any(d < 1 for d in shape):
        raise UploadError(f"{_code(name)} has a damaged NIfTI header (dimensions {list(shape)}).")
    declared = math.prod(int(d) for d in shape) * itemsize
    if declared > MAX_EXTRACTED_MB * 1024 * 1024:
        raise UploadError(f"{_code(name)} declares a {'×'.join(str(d) for d in shape)} volume of {_mb(declared)} ({8 * itemsize} bits per voxel); "
                          f"the limit is {MAX_EXTRACTED_MB} MB.")


def check_upload(name: str, data: bytes) -> str:
    """Type and size checks before anything parses the bytes; returns the suffix."""
    suffix = upload_suffix(name)
    if len(data) == 0:
        raise UploadError(f"{_code(name)} is empty (0 bytes).")
    if len(data) > MAX_UPLOAD_MB * 1024 * 1024:
        raise UploadError(f"{_code(name)} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
    if suffix == ".nii.gz" and data[:2] != b"\x1f\x8b":
        raise UploadError(f"{_code(name)} is named .nii.gz but is not gzip-compressed data.")
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_header(name, _gunzip_head(name, data, 540) if suffix == ".nii.gz" else data[:540])
    if suffix == ".nrrd" and not data.startswith(b"NRRD"):
        raise UploadError(f"{_code(name)} is not an NRRD file (it does not start with the `NRRD` magic).")
    if suffix == ".dcm" and (len(data) < 132 or data[128:132] != b"DICM"):
        raise UploadError(f"{_code(name)} is not a DICOM file (no `DICM` marker at byte 128).")
    if suffix == ".zip" and not zipfile.is_zipfile(io.BytesIO(data)):
        raise UploadError(f"{_code(name)} is not a valid ZIP archive.")
    return suffix


# ---- the private folder of one session ----------------------------------------------------------
def upload_root() -> Path:
    """Where session folders are made: the system temp folder (``$TMPDIR``)."""
    return Path(tempfile.gettempdir())


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


_LIVE: "weakref.WeakValueDictionary[str, SessionUploads]" = weakref.WeakValueDictionary()  # session id -> its folder
_ALL: "weakref.WeakSet[SessionUploads]" = weakref.WeakSet()  # every folder this process still uses


class SessionUploads:
    """One session's private upload folder: ``mkdtemp`` (0700, unpredictable name), removed by
    :meth:`close`, when this object is garbage-collected (its session's state is dropped) or at exit."""

    def __init__(self, session_id: str | None = None, root: Path | None = None):
        self.session_id = session_id
        self.path = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=str(root or upload_root())))
        os.chmod(self.path, 0o700)  # mkdtemp's own mode; said explicitly for readers
        self._finalizer = weakref.finalize(self, _remove, str(self.path))
        _ALL.add(self)
        if session_id is not None:
            _LIVE[session_id] = self

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def touch(self) -> None:
        """Mark the folder as in use (:func:`sweep_stale` spares folders touched within the TTL)."""
        try:
            os.utime(self.path)
        except OSError:
            pass

    def subdir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(mode=0o700, exist_ok=True)
        return d


_STATE_KEY = "_suite_uploads"


def reap_closed_sessions() -> list[str]:
    """Remove the folders of sessions the Streamlit runtime no longer serves; their ids."""
    try:
        from streamlit.runtime import Runtime
    except ImportError:  # pragma: no cover - streamlit is a dependency of the dashboards
        return []
    if not Runtime.exists():  # AppTest and bare scripts: the finaliser does it
        return []
    runtime = Runtime.instance()
    gone = [sid for sid in list(_LIVE.keys()) if not runtime.is_active_session(sid)]
    for sid in gone:
        su = _LIVE.pop(sid, None)
        if su is not None:
            su.close()
    return gone


def session_uploads() -> SessionUploads:
    """The current Streamlit session's upload folder, made on first use (again if it was removed)."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    reap_closed_sessions()
    ctx = get_script_run_ctx()
    sid = ctx.session_id if ctx is not None else None
    su = st.session_state.get(_STATE_KEY)
    if not isinstance(su, SessionUploads) or su.closed or not su.path.is_dir():
        su = SessionUploads(sid)
        st.session_state[_STATE_KEY] = su
    su.touch()
    return su


def sweep_stale(ttl_hours: float = UPLOAD_TTL_HOURS, root: Path | None = None) -> list[Path]:
    """Remove this user's upload folders untouched for ``ttl_hours`` (left by a killed server), and
    the shared folder older versions used; the removed paths. Live sessions' folders are spared."""
    root = Path(root or upload_root())
    live = {str(su.path) for su in list(_ALL) if not su.closed}
    now, removed = time.time(), []
    candidates = list(root.glob(f"{DIR_PREFIX}*")) + [root / LEGACY_DIR]
    for p in candidates:
        try:
            st_ = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISDIR(st_.st_mode) or st_.st_uid != os.getuid() or str(p) in live:
            continue
        if p.name == LEGACY_DIR or now - st_.st_mtime > ttl_hours * 3600:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


# ---- ZIP archives --------------------------------------------------------------------------------
def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:.0f} MB"


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry makes the archive unsafe (absolute path, ``..``, symbolic link), or None."""
    name = info.filename
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "a `..` path component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return None


def _ignorable(info: zipfile.ZipInfo) -> bool:
    """Folders, macOS resource forks (``__MACOSX/``) and hidden files: not part of a series."""
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    return info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith(".")


def extract_zip(name: str, data: bytes, dest: Path) -> list[Path]:
    """Extract the files of ``data`` (a ZIP) into the new folder ``dest`` under numbered names,
    within the limits above; on any refusal nothing stays in ``dest``. The written paths."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UploadError(f"{_code(name)} is not a valid ZIP archive ({e}).") from None
    with zf:
        infos = []
        for info in zf.infolist():
            problem = _entry_problem(info)
            if problem:
                raise UploadError(f"{_code(name)} was refused: its entry {_code(info.filename)} has {problem}. "
                                  "Zip the series folder itself (plain relative file names, no links).")
            if not _ignorable(info):
                infos.append(info)
        if not infos:
            raise UploadError(f"{_code(name)} contains no files.")
        if len(infos) > MAX_FILES:
            raise UploadError(f"{_code(name)} holds {len(infos)} files; the limit is {MAX_FILES} (one DICOM series per upload).")
        declared = sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        limit = MAX_EXTRACTED_MB * 2**20
        if declared > limit:
            raise UploadError(f"{_code(name)} expands to {_mb(declared)}; the limit is {MAX_EXTRACTED_MB} MB decompressed.")
        if declared > RATIO_FLOOR_MB * 2**20 and declared > MAX_RATIO * max(packed, 1):
            raise UploadError(f"{_code(name)} expands from {_mb(len(data))} to {_mb(declared)} ({declared / max(packed, 1):.0f}× "
                              f"compression); archives expanding more than {MAX_RATIO}× are refused as likely zip bombs.")
        dest.mkdir(mode=0o700)
        written: list[Path] = []
        total = 0
        try:
            for n, info in enumerate(infos):
                suffix = ".dcm" if info.filename.lower().endswith(".dcm") else ""
                target = dest / f"{n:05d}{suffix}"
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
                with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                    got = 0
                    while chunk := src.read(_CHUNK):
                        got += len(chunk)
                        total += len(chunk)
                        if got > info.file_size or total > limit:  # a header that lies: stop at the limit
                            raise UploadError(f"{_code(name)}: entry {_code(info.filename)} expands beyond the size its header declares "
                                              f"({_mb(info.file_size)}) or the {MAX_EXTRACTED_MB} MB limit; refused.")
                        out.write(chunk)
                written.append(target)
        except UploadError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as e:
            shutil.rmtree(dest, ignore_errors=True)
            raise UploadError(f"{_code(name)} could not be extracted ({type(e).__name__}: {e}).") from None
    return written


# ---- from upload to a file the medical API reads ----------------------------------------------------
def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def materialise(name: str, data: bytes, suffix: str, uploads: SessionUploads,
                dicom_to_nifti: Callable[[Path, Path], object] | None = None, role: str = "scan") -> Path:
    """A file the medical API can read, inside the session's private folder.

    NIfTI and NRRD are written as they are (under a fixed name, not the upload's). DICOM (``.dcm`` or a
    ``.zip`` of a series) is extracted into a raw folder, read by ``dicom_to_nifti(raw_folder,
    nifti_path)`` and the raw folder deleted at once, whether the read succeeded or not."""
    digest = hashlib.sha256(data).hexdigest()[:16]
    base = uploads.subdir(f"{role}-{digest}")
    if suffix in DICOM_SUFFIXES:
        out = base / "volume.nii.gz"
        if out.is_file():
            return out
        if dicom_to_nifti is None:
            raise UploadError(f"{_code(name)}: DICOM uploads need a reader (none was given).")
        raw = base / "raw"
        shutil.rmtree(raw, ignore_errors=True)
        try:
            if suffix == ".zip":
                extract_zip(name, data, raw)
            else:
                raw.mkdir(mode=0o700)
                _write_private(raw / "00000.dcm", data)
            dicom_to_nifti(raw, out)
            os.chmod(out, 0o600)
        finally:
            shutil.rmtree(raw, ignore_errors=True)  # the raw files carry the patient's name: never kept
        return out
    path = base / f"{role}{suffix}"
    if not path.is_file():
        _write_private(path, data)
    return path
