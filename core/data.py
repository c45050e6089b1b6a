"""Data preparation: materialise each installed real source into the local data root.

    python -m core.data list
    python -m core.data prepare all            # or: prepare medical / prepare ml-100k ...

Each domain declares its data sets as :class:`DatasetSpec` objects and registers them under the
``suite.datasets`` entry-point group (see pyproject.toml), so ``core`` never imports a domain.

For each data set:
* ``locate()`` finds the installed source files (a package's data or a Debian package); when one
  is missing it raises :class:`SourceMissingError` naming the install command.
* Every source file is checked against the sha256 recorded in the data set's card
  (``datasets/<name>/README.md``, between ``<!-- checksums:start -->`` markers); a mismatch is a
  :class:`CorruptSourceError` that names the file, both digests and how to reinstall.
* ``build(sources, out_dir)`` writes the prepared files into a temporary folder that is renamed
  into ``<root>/<name>`` only when complete, with a ``MANIFEST.json`` of source and output digests.
  A rebuild (``--force``, changed sources) swaps the new folder with the old one in one step
  (Linux ``renameat2(RENAME_EXCHANGE)``), so a training reading the data set meanwhile finds either
  the old or the new folder, whole — never no folder (elsewhere: two renames, a short gap).
  A second run with unchanged sources verifies the outputs and does nothing (idempotent).
* One process builds a data set at a time (``<root>/.<name>.lock``, a ``flock`` freed when its holder
  exits or dies): a second ``prepare`` — or a training preparing it on first use — waits, then finds it
  up to date. The no-root Debian fetch takes the same kind of lock per package.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

from core.io import atomic_write_json, sha256_file, write_marked_block
from core.locking import FolderLock
from core.logging import get_logger

__all__ = [
    "DatasetSpec",
    "SourceMissingError",
    "CorruptSourceError",
    "data_root",
    "cards_dir",
    "prepare",
    "registered_datasets",
    "read_card_checksums",
    "write_card_checksums",
    "dataset_dir",
    "ensure_dataset",
    "debian_package_files",
    "safe_extract_tar",
]

log = get_logger("data")
REPO_ROOT = Path(__file__).resolve().parents[1]
_BEGIN, _END = "<!-- checksums:start -->", "<!-- checksums:end -->"


class SourceMissingError(FileNotFoundError):
    """A real source is not installed; the message names the command that installs it."""


class CorruptSourceError(ValueError):
    """A source file's digest differs from the one recorded in its dataset card."""


@dataclass
class DatasetSpec:
    name: str
    domain: str
    description: str
    locate: Callable[[], dict[str, Path]]
    build: Callable[[dict[str, Path], Path], None]
    version: str = "1"
    optional: bool = False  # the demo skips it (with a message) when its source is not installed
    tags: list[str] = field(default_factory=list)

    @property
    def card(self) -> Path:
        return cards_dir() / self.name / "README.md"


def data_root() -> Path:
    """``$SUITE_DATA_ROOT`` or ``datasets/data`` in the repository."""
    return Path(os.environ.get("SUITE_DATA_ROOT") or REPO_ROOT / "datasets" / "data")  # set but empty: the default, not the current folder


def cards_dir() -> Path:
    return REPO_ROOT / "datasets"


def dataset_dir(name: str, root: Path | None = None) -> Path:
    """The prepared folder of data set ``name``; a clear error if it has not been prepared, or if its
    MANIFEST.json is damaged or a file it lists is missing or of another size (cheap: no hashing).
    A rebuild swapping the folder during the check (``prepare --force`` beside a training: the manifest
    read from the old folder, a file from the new) is not taken for damage: the check is repeated until
    the manifest it read is still the one in place."""
    d = (root or data_root()) / name
    for _ in range(10):
        problem, manifest_text = _manifest_problem(name, d)
        if problem is None or _read_bytes(d / "MANIFEST.json") == manifest_text:
            break
    if problem is not None:
        raise FileNotFoundError(problem)
    return d


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _manifest_problem(name: str, d: Path) -> tuple[str | None, bytes | None]:
    """(why ``d`` is not a usable prepared folder of ``name`` in one line, or None; the MANIFEST.json bytes read)."""
    manifest_path = d / "MANIFEST.json"
    if not manifest_path.is_file():
        return f"data set {name!r} is not prepared under {d.parent}; run `python -m core.data prepare {name}`", None
    text = _read_bytes(manifest_path)
    manifest, problem = _parse_manifest(text, manifest_path) if text is not None else ({}, f"{manifest_path} is not readable")
    if problem is None:
        sizes = manifest.get("output_bytes") or {}
        for rel in manifest["outputs"]:
            f = d / rel
            if not f.is_file():
                problem = f"{f} is missing"
            elif rel in sizes and f.stat().st_size != sizes[rel]:
                problem = f"{f} was modified ({f.stat().st_size} bytes, prepared {sizes[rel]})"
            if problem:
                break
    if problem is not None:
        return f"data set {name!r} in {d} is damaged: {problem}; run `python -m core.data prepare {name}` to rebuild it", text
    return None, text


def _read_manifest(path: Path) -> tuple[dict, str | None]:
    """(manifest, None), or ({}, what is wrong) for a MANIFEST.json that is not a JSON object listing outputs."""
    try:
        text = path.read_bytes()
    except OSError as e:
        return {}, f"{path} is not readable JSON ({type(e).__name__})"
    return _parse_manifest(text, path)


def _parse_manifest(text: bytes, path: Path) -> tuple[dict, str | None]:
    try:
        manifest = json.loads(text.decode("utf-8"))
    except ValueError as e:  # not JSON, not UTF-8
        return {}, f"{path} is not readable JSON ({type(e).__name__})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("outputs"), dict):
        return {}, f"{path} does not list the prepared files"
    return manifest, None


def ensure_dataset(spec: DatasetSpec, root: Path | None = None) -> Path:
    """The prepared folder of ``spec``, preparing it on first use. Once prepared this only checks
    the manifest and the listed files' presence and sizes (no re-hashing; a damaged folder is
    rebuilt); ``prepare`` is the verifying path."""
    try:
        return dataset_dir(spec.name, root)
    except FileNotFoundError:
        return prepare(spec, root=root)


def debian_cache_dir() -> Path:
    """Where Debian data packages fetched without root are unpacked: ``<data root>/.debian``."""
    return data_root() / ".debian"


def debian_package_files(package: str, paths: list[str], *, system: bool = True, fetch: bool = True) -> dict[str, Path]:
    """Files of a Debian data package (absolute paths as installed, e.g. ``/usr/share/mricron/templates/ch2.nii.gz``),
    found without needing root:

    1. the system install, when every file is there (``system=False`` skips it);
    2. the user's cache ``<data root>/.debian/<package>/`` (a previous fetch);
    3. otherwise ``apt-get download <package>`` and ``dpkg-deb -x`` into that cache — neither needs root.
       ``SUITE_DEBIAN_FETCH=0`` (or ``fetch=False``) turns this step off.

    Returns ``{basename: path}``. The caller checks each file against the sha256 in its dataset card
    (:func:`verify_sources`). Raises :class:`SourceMissingError` in one line when none of the three works,
    e.g. on a machine without apt.
    """
    if system and all(Path(p).is_file() for p in paths):
        return {Path(p).name: Path(p) for p in paths}
    cache = debian_cache_dir() / package
    cached = {Path(p).name: cache / p.lstrip("/") for p in paths}
    if all(c.is_file() for c in cached.values()):
        return cached
    install = f"`sudo apt-get install -y {package}`, or let `python -m core.data prepare` fetch it without root (needs apt-get and dpkg-deb)"
    if not fetch or os.environ.get("SUITE_DEBIAN_FETCH", "1") == "0":
        raise SourceMissingError(f"Debian package {package} is not installed and fetching is off (SUITE_DEBIAN_FETCH=0): {install}")
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if not apt or not dpkg:
        raise SourceMissingError(f"Debian package {package} is not installed and this machine has no apt-get/dpkg-deb to fetch it; "
                                 f"the data sets built from it are skipped")
    cache.parent.mkdir(parents=True, exist_ok=True)
    # one fetch per package: a second process waits for the first and uses its cache (two fetches at once
    # removed and renamed the cache folder under each other)
    with FolderLock.wait(cache.parent / f".{package}.lock",
                         on_wait=lambda pid: log.info(f"Debian package {package} is being fetched by another process (PID {pid}); waiting for it")):
        if not all(c.is_file() for c in cached.values()):
            _fetch_debian_package(package, cache, apt, dpkg, install)
    missing = [str(c) for c in cached.values() if not c.is_file()]
    if missing:
        raise SourceMissingError(f"Debian package {package} was fetched but lacks {missing[0]}; a different release? See its dataset card")
    return cached


def _fetch_debian_package(package: str, cache: Path, apt: str, dpkg: str, install: str) -> None:
    """``apt-get download`` + ``dpkg-deb -x`` into ``cache`` (replaced whole); the caller holds the package's lock."""
    log.info(f"fetching Debian package {package} without root (apt-get download + dpkg-deb -x) into {cache}")
    work = Path(tempfile.mkdtemp(prefix=f".{package}.", dir=cache.parent))
    try:
        r = subprocess.run([apt, "download", package], cwd=work, capture_output=True, text=True, timeout=600)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if r.returncode != 0 or not debs:
            why = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no .deb downloaded"]
            raise SourceMissingError(f"could not fetch Debian package {package} with `apt-get download` ({why[0]}); install it with {install}")
        unpacked = work / "root"
        r = subprocess.run([dpkg, "-x", str(debs[0]), str(unpacked)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SourceMissingError(f"`dpkg-deb -x {debs[0].name}` failed: {r.stderr.strip()[:200]}")
        if cache.exists():
            shutil.rmtree(cache)
        os.replace(unpacked, cache)  # the cache appears whole or not at all
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info(f"fetched {package} into {cache} (files are checked against the dataset card's sha256 next)")


def safe_extract_tar(archive: str | Path, dest: str | Path) -> None:
    """Extract a tar archive refusing absolute paths, ``..``, links and device files. Uses the stdlib's
    ``filter="data"`` where it exists (Python ≥ 3.11.4) and the same checks by hand on older 3.11
    releases (Debian 12 ships 3.11.2)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
            return
        root = dest.resolve()
        members = []
        for m in tf.getmembers():
            target = (root / m.name).resolve()
            if m.name.startswith("/") or (target != root and root not in target.parents):
                raise ValueError(f"{archive}: member {m.name!r} would be written outside {dest}")
            if not (m.isfile() or m.isdir()):
                raise ValueError(f"{archive}: member {m.name!r} is a link or special file; refused")
            m.mode = (m.mode or 0o644) & 0o755
            members.append(m)
        tf.extractall(dest, members=members)  # noqa: S202 - every member checked above


def read_card_checksums(card: Path) -> dict[str, str]:
    if not card.is_file():
        return {}
    text = card.read_text()
    if _BEGIN not in text:
        return {}
    block = text.split(_BEGIN, 1)[1].split(_END, 1)[0]
    out = {}
    for m in re.finditer(r"^\|\s*`?([^|`]+?)`?\s*\|\s*([0-9a-f]{64})\s*\|", block, re.M):
        out[m.group(1).strip()] = m.group(2)
    return out


def write_card_checksums(card: Path, checksums: dict[str, str]) -> None:
    table = "\n".join(["| source file | sha256 |", "|---|---|", *[f"| `{k}` | {v} |" for k, v in sorted(checksums.items())]])
    write_marked_block(card, _BEGIN, _END, table, new_file=f"# {card.parent.name}\n\n## Source checksums\n\n")


def verify_sources(spec: DatasetSpec, sources: dict[str, Path], record: bool = False) -> dict[str, str]:
    digests = {}
    for key, path in sources.items():
        path = Path(path)
        if not path.is_file():
            raise SourceMissingError(f"{spec.name}: source file {path} is missing")
        digests[key] = sha256_file(path)
    expected = read_card_checksums(spec.card)
    if record:
        write_card_checksums(spec.card, digests)
        return digests
    for key, got in digests.items():
        want = expected.get(key)
        if want is None:
            log.warning(f"{spec.name}: no checksum recorded for {key} in {spec.card}; record with `python -m core.data prepare {spec.name} --record-checksums`")
        elif want != got:
            raise CorruptSourceError(
                f"{spec.name}: source file {sources[key]} is corrupt or a different release: sha256 {got[:16]}… "
                f"but the dataset card {spec.card} records {want[:16]}…. Reinstall its package (see the card) and retry."
            )
    return digests


def _outputs_digest(out_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(out_dir)): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != "MANIFEST.json"}


def prepare(spec: DatasetSpec, root: Path | None = None, force: bool = False, record_checksums: bool = False) -> Path:
    """Prepare one data set; returns its folder. Idempotent."""
    root = Path(root or data_root())
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"data root {root} is a file, not a folder")
    out_dir = root / spec.name
    sources = spec.locate()
    digests = verify_sources(spec, sources, record=record_checksums)
    if not force and _up_to_date(spec, out_dir, digests):
        log.info(f"{spec.name}: up to date in {out_dir}")
        return out_dir
    root.mkdir(parents=True, exist_ok=True)
    # one builder per data set: a second `prepare` (or a training preparing on first use) waits for the first,
    # then finds the folder up to date — two builds at once swapped folders under each other's readers
    def waiting(pid: int | None) -> None:
        log.info(f"{spec.name}: being prepared by another process{f' (PID {pid})' if pid else ''}; waiting for it to finish")

    with FolderLock.wait(root / f".{spec.name}.lock", on_wait=waiting):
        if not force and _up_to_date(spec, out_dir, digests, quiet=True):
            log.info(f"{spec.name}: up to date in {out_dir} (prepared by the other process)")
            return out_dir
        _build(spec, sources, digests, root, out_dir)
    log.info(f"{spec.name}: prepared in {out_dir}")
    return out_dir


def _up_to_date(spec: DatasetSpec, out_dir: Path, digests: dict[str, str], quiet: bool = False) -> bool:
    """Whether ``out_dir`` holds this version of ``spec`` built from these source digests, its outputs unmodified."""
    manifest_path = out_dir / "MANIFEST.json"
    if not manifest_path.is_file():
        return False
    manifest, problem = _read_manifest(manifest_path)
    if problem is not None:
        if not quiet:
            log.warning(f"{spec.name}: {problem}; rebuilding")
        return False
    if manifest.get("version") != spec.version or manifest.get("sources") != digests:
        return False
    if manifest.get("outputs") != _outputs_digest(out_dir):
        if not quiet:
            log.warning(f"{spec.name}: prepared files in {out_dir} were modified; rebuilding")
        return False
    return True


def _build(spec: DatasetSpec, sources: dict[str, Path], digests: dict[str, str], root: Path, out_dir: Path) -> None:
    """Build into a temporary folder beside ``out_dir`` and rename it into place only when complete."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=root))
    try:
        spec.build({k: Path(v) for k, v in sources.items()}, tmp)
        atomic_write_json(tmp / "MANIFEST.json", {
            "name": spec.name, "domain": spec.domain, "version": spec.version, "sources": digests,
            "source_paths": {k: str(v) for k, v in sources.items()}, "outputs": _outputs_digest(tmp),
            "output_bytes": {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file() and p.name != "MANIFEST.json"},
        })
        if out_dir.is_dir() and not out_dir.is_symlink() and _exchange(tmp, out_dir):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder; readers already see the new one
            return
        old = None
        if out_dir.exists() or out_dir.is_symlink():  # no atomic swap here: a short gap between the two renames
            old = root / f".{spec.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders at ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``: whoever opens
    ``b`` meanwhile gets the old or the new folder, never nothing). False where the C library or the
    filesystem lacks it (the caller renames twice instead); other failures raise OSError."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):  # kernel or filesystem without the flag
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def registered_datasets() -> dict[str, DatasetSpec]:
    """Every DatasetSpec registered under the ``suite.datasets`` entry-point group."""
    specs: dict[str, DatasetSpec] = {}
    for ep in entry_points(group="suite.datasets"):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - one broken domain must not hide the others
            log.warning(f"data sets of {ep.name!r} could not be loaded ({ep.value}): {type(e).__name__}: {e}")
            continue
        for spec in (obj() if callable(obj) else obj):
            specs[spec.name] = spec
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list registered data sets and whether they are prepared")
    p = sub.add_parser("prepare", help="prepare data sets into the data root", allow_abbrev=False)  # --rec must not rewrite the cards
    p.add_argument("names", nargs="+", help="'all', a domain (medical, finance, recommendation) or data set names")
    p.add_argument("--root", type=Path, default=None, help=f"data root (default: $SUITE_DATA_ROOT or {data_root()})")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--record-checksums", action="store_true", help="(maintainers) write the current source digests into the dataset cards")
    args = parser.parse_args(argv)
    specs = registered_datasets()
    if args.cmd == "list":
        for s in specs.values():
            try:
                state = "prepared" if dataset_dir(s.name) else ""
            except FileNotFoundError:
                state = "damaged" if (data_root() / s.name / "MANIFEST.json").is_file() else "not prepared"
            print(f"{s.name:28s} {s.domain:15s} {state:13s} {s.description}")
        return 0
    chosen: list[DatasetSpec] = []
    for n in args.names:
        if n == "all":
            chosen += list(specs.values())
        elif n in specs:
            chosen.append(specs[n])
        elif any(s.domain == n for s in specs.values()):
            chosen += [s for s in specs.values() if s.domain == n]
        else:
            parser.error(f"unknown data set {n!r}; known: all, {', '.join(sorted({s.domain for s in specs.values()}))}, {', '.join(specs)}")
    seen, failed, skipped = set(), [], []
    for s in chosen:
        if s.name in seen:
            continue
        seen.add(s.name)
        try:
            out = prepare(s, root=args.root, force=args.force, record_checksums=args.record_checksums)
            print(f"ok       {s.name:28s} {out}")
        except SourceMissingError as e:
            if s.optional:
                skipped.append(s.name)
                print(f"skipped  {s.name:28s} {e}")
            else:
                failed.append(s.name)
                print(f"MISSING  {s.name:28s} {e}", file=sys.stderr)
        except CorruptSourceError as e:
            failed.append(s.name)
            print(f"CORRUPT  {s.name:28s} {e}", file=sys.stderr)
        except OSError as e:  # the data root is a file, read-only, full...: one line, the other data sets still run
            failed.append(s.name)
            print(f"FAILED   {s.name:28s} {e}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} optional data set(s) whose source is not installed: {', '.join(skipped)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
