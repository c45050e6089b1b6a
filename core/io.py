"""Atomic file writes: write to a temporary file beside the target, fsync, then rename.

A crash at any point leaves either the old file or the new one at ``path``, never half a
file. Every writer in the suite (checkpoints, configs, metrics, Parquet outputs) goes through
:func:`atomic_write`.

Reading other people's files: :func:`read_parquet` (errors name the file) and :func:`read_csv_text`
(a CSV whose encoding nobody stated: UTF-8, else a Windows/Excel export).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar

from core.errors import UserInputError, one_line
from core.logging import get_logger

log = get_logger("io")
T = TypeVar("T")

__all__ = [
    "text_encoding_of",
    "read_text_guessing_encoding",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_parquet",
    "write_marked_block",
    "sha256_file",
    "json_default",
    "finite_or_none",
    "read_parquet",
    "read_csv_text",
    "CSV_FALLBACK_ENCODING",
    "UnreadableFileError",
    "MissingColumnsError",
    "TEMP_MARK",
    "is_temp_file",
    "remove_temp_files",
]

# Every temporary file of an atomic write is named ``.<stem>.tmp-<random><suffixes>``: hidden, marked,
# and keeping the target's extension (pyarrow, nibabel and torch.onnx pick the format by it).
TEMP_MARK = ".tmp-"


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on some platforms / filesystems
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    if "r" in mode or "a" in mode:
        raise ValueError(f"atomic_write only supports write modes, got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
        yield fh


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary *path* beside ``path`` (for libraries that insist on writing by file name:
    pyarrow, nibabel, torch.onnx); when the block succeeds it is fsynced and renamed onto ``path``,
    on any exception it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    tmp_path = None
    try:
        # as tempfile.mkstemp (O_EXCL, 0600), but the name is set before the file exists: an exception arriving just
        # after its creation (SIGTERM's core.runs.RunTerminated, Ctrl-C) still finds the file to remove below
        while True:
            tmp_path = path.parent / f".{path.stem}{TEMP_MARK}{secrets.token_hex(4)}{suffix}"
            try:
                os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                break
            except FileExistsError:
                tmp_path = None
        yield tmp_path
        os.chmod(tmp_path, _umask_mode())  # the temp file was made 0600 above (and some writers recreate it so)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2, strict: bool = False) -> Path:
    """``obj`` as JSON at ``path``, atomically. ``strict=True``: every non-finite float (NaN, ±inf, NumPy's
    too) is written as ``null`` (:func:`finite_or_none`), so the file is strict JSON (RFC 8259) that ``jq``,
    JavaScript and other tools read — Python's default writes ``NaN``/``Infinity``, which they refuse. A
    ``null`` says nothing of why: the writer records that beside it."""
    if strict:
        text = json.dumps(finite_or_none(obj), indent=indent, sort_keys=True, default=json_default, allow_nan=False)
    else:
        text = json.dumps(obj, indent=indent, sort_keys=True, default=json_default)
    return atomic_write_text(path, text + "\n")


def atomic_write_parquet(df: Any, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a pandas DataFrame to Parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, **kwargs)
    return Path(path)


class UnreadableFileError(UserInputError, ValueError):
    """A data file that cannot be parsed (corrupt, truncated, another format); the message names it."""


class MissingColumnsError(UnreadableFileError):
    """A readable Parquet file without the columns asked for."""


def read_parquet(path: str | os.PathLike, **kwargs: Any) -> Any:
    """``pandas.read_parquet`` whose errors name the file (pyarrow's say ``<Buffer>``)."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_parquet(path, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ValueError...
        first = one_line(e, None) or type(e).__name__
        missing = _missing_columns(path, kwargs.get("columns"))
        if missing:  # a readable file without the asked columns is not "corrupt"
            raise MissingColumnsError(f"{path}: no column(s) {missing[0]}; it has {missing[1]}") from e
        raise UnreadableFileError(f"{path}: not a readable Parquet file ({first}); it is corrupt, truncated or another format — rewrite or replace it") from e


# Windows' western-European code page, what Excel writes a "CSV" in for a European locale: latin-1 plus the
# euro sign and typographic quotes in 0x80-0x9f (latin-1 has control characters there)
CSV_FALLBACK_ENCODING = "cp1252"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # Excel's "Unicode text" export is UTF-16 with a byte-order mark
_UTF8_BOM = b"\xef\xbb\xbf"  # what Notepad and Excel's "CSV UTF-8" put before UTF-8 text


def read_text_guessing_encoding(path: str | os.PathLike, read: Callable[[str, str], T]) -> tuple[T, str]:
    """``read(encoding, errors)`` of a text file whose encoding nobody stated, by one rule for every reader (CSV,
    JSON lines): UTF-16 when the file starts with its byte-order mark; else UTF-8 (``utf-8-sig``: a byte-order
    mark is skipped); else, when UTF-8 cannot decode it, :data:`CSV_FALLBACK_ENCODING` (cp1252, a Windows/Excel
    export from western Europe; its five unassigned bytes read as U+FFFD, ``errors="replace"``) — the UTF-16 and
    cp1252 choices are logged, naming the file (and the first byte UTF-8 refused). Returns (what ``read`` returned,
    the encoding). ``read`` may run twice (UTF-8, then cp1252)."""
    if _first_bytes(path).startswith(_UTF16_BOMS):
        log.info(f"{path}: read as UTF-16 (the file starts with its byte-order mark)")
        return read("utf-16", "strict"), "utf-16"
    try:
        return read("utf-8-sig", "strict"), "utf-8-sig"
    except UnicodeDecodeError as e:
        byte = f"byte 0x{e.object[e.start]:02x}" if isinstance(e.object, (bytes, bytearray)) and e.start < len(e.object) else "a byte"
        log.info(f"{path}: not UTF-8 ({byte} is not valid UTF-8 there); read as {CSV_FALLBACK_ENCODING} "
                 "(a Windows/Excel export: latin-1 plus the euro sign)")
        return read(CSV_FALLBACK_ENCODING, "replace"), CSV_FALLBACK_ENCODING


def read_csv_text(path: str | os.PathLike, encoding: str | None = None, **kwargs: Any) -> Any:
    """``pandas.read_csv`` of a text table whose encoding nobody stated (:func:`read_text_guessing_encoding`:
    UTF-16 with a byte-order mark, else UTF-8, else cp1252, logged). The encoding read is ``df.attrs["encoding"]``:
    pass it back as ``encoding=`` to read the same file again without guessing (and logging) twice. An
    ``encoding`` given is used as it is. Other keyword arguments go to ``pandas.read_csv`` (compressed files too:
    the encoding applies to the inflated text)."""
    import pandas as pd

    if encoding is None:
        df, encoding = read_text_guessing_encoding(path, lambda enc, errors: pd.read_csv(path, encoding=enc, **{"encoding_errors": errors, **kwargs}))
    else:
        if encoding == CSV_FALLBACK_ENCODING:
            kwargs.setdefault("encoding_errors", "replace")
        df = pd.read_csv(path, encoding=encoding, **kwargs)
    df.attrs["encoding"] = encoding
    return df


def text_encoding_of(path: str | os.PathLike, unmarked: str = "utf-8-sig") -> str:
    """The encoding a text file's byte-order mark names (a .gz file: its text's): ``utf-16`` for a UTF-16 mark,
    ``utf-8-sig`` for a UTF-8 one (the mark is skipped, not read as part of the first field), else ``unmarked``.
    The default suits a file about to be read by :func:`read_csv_text` (e.g. to sniff its header first); a reader
    whose files have a known legacy encoding passes it (GroupLens' MovieLens files: ``unmarked="latin-1"``)."""
    head = _first_bytes(path)
    if head.startswith(_UTF16_BOMS):
        return "utf-16"
    return "utf-8-sig" if head.startswith(_UTF8_BOM) else unmarked


def _first_bytes(path: str | os.PathLike, n: int = 4) -> bytes:
    """The first ``n`` bytes of the file's text (inflated for a .gz file); empty when it cannot be read here
    (pandas' own error then names the problem)."""
    import gzip

    try:
        with (gzip.open if str(path).lower().endswith(".gz") else open)(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError):
        return b""


def _missing_columns(path: Path, columns: Any) -> tuple[list[str], list[str]] | None:
    """(asked columns the file lacks, its columns) when its schema is readable and lacks some; else None."""
    if not columns:
        return None
    try:
        import pyarrow.parquet as pq

        names = [n for n in pq.read_schema(path).names if n != "__index_level_0__"]
    except Exception:  # noqa: BLE001 - the file itself is unreadable: the caller says so
        return None
    missing = [c for c in columns if c not in names]
    return (missing, names) if missing else None


def write_marked_block(path: str | os.PathLike, begin: str, end: str, body: str, new_file: str = "") -> Path:
    """Replace the text between the markers ``begin`` and ``end`` in ``path`` by ``body`` (markers kept),
    or append the marked block when absent; a missing file starts as ``new_file``. Written atomically."""
    path = Path(path)
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.is_file() else new_file
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    return atomic_write_text(path, text)


def is_temp_file(path: str | os.PathLike) -> bool:
    """A leftover of an interrupted atomic write: a hidden file with the temp mark (or the older
    ``.<stem>.<random><suffix>`` / ``*.tmp`` names)."""
    name = Path(path).name
    return name.startswith(".") and (TEMP_MARK in name or name.endswith(".tmp") or name.count(".") >= 2)


def remove_temp_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete what interrupted atomic writes left in ``folder``; returns the removed paths. Only call
    it on a folder no other process is writing (e.g. under its lock)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in (folder.rglob(".*") if recursive else folder.glob(".*")) if p.is_file() and not p.is_symlink() and is_temp_file(p)]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for the suite's values: paths, NumPy scalars and arrays, dataclasses."""
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf; Python's or NumPy's, in dicts, lists, tuples, arrays,
    dataclasses) replaced by ``None``; other values as :func:`json_default` turns them into JSON's."""
    import math

    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    try:
        converted = json_default(obj)
    except TypeError:
        return obj  # json.dumps names the type it cannot write
    return finite_or_none(converted)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
