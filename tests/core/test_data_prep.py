"""Data preparation: idempotent, verified against the card's checksums, atomic."""

import json

import pytest

from core import data as coredata
from core.data import CorruptSourceError, DatasetSpec, SourceMissingError, prepare, read_card_checksums


def _spec(tmp_path, src, calls):
    def locate():
        if not src.exists():
            raise SourceMissingError("toy source missing: install it with `pip install toy-data`")
        return {"toy.csv": src}

    def build(sources, out):
        calls.append(1)
        rows = sources["toy.csv"].read_text().splitlines()
        (out / "toy.json").write_text(json.dumps(rows))

    return DatasetSpec(name="toy", domain="unit", description="toy", locate=locate, build=build)


@pytest.fixture
def cards(tmp_path, monkeypatch):
    monkeypatch.setattr(coredata, "cards_dir", lambda: tmp_path / "cards")
    return tmp_path / "cards"


def test_prepare_is_idempotent_and_verifies(tmp_path, cards):
    src = tmp_path / "toy.csv"
    src.write_text("a,b\n1,2\n")
    calls = []
    spec = _spec(tmp_path, src, calls)
    root = tmp_path / "root"
    out = prepare(spec, root=root, record_checksums=True)
    assert read_card_checksums(spec.card)["toy.csv"]
    first = (out / "MANIFEST.json").read_text()
    prepare(spec, root=root)
    assert len(calls) == 1, "second prepare with unchanged sources must not rebuild"
    assert (out / "MANIFEST.json").read_text() == first
    # a modified output is detected and rebuilt
    (out / "toy.json").write_text("tampered")
    prepare(spec, root=root)
    assert len(calls) == 2 and json.loads((out / "toy.json").read_text()) == ["a,b", "1,2"]


def test_corrupted_source_rejected_with_clear_message(tmp_path, cards):
    src = tmp_path / "toy.csv"
    src.write_text("a,b\n1,2\n")
    spec = _spec(tmp_path, src, [])
    prepare(spec, root=tmp_path / "root", record_checksums=True)
    src.write_text("a,b\n1,999\n")  # flipped bytes
    with pytest.raises(CorruptSourceError) as e:
        prepare(spec, root=tmp_path / "root", force=True)
    assert "toy.csv" in str(e.value) and "Reinstall" in str(e.value)


def test_missing_source_names_install_command(tmp_path, cards):
    spec = _spec(tmp_path, tmp_path / "absent.csv", [])
    with pytest.raises(SourceMissingError, match="pip install toy-data"):
        prepare(spec, root=tmp_path / "root")


def test_failed_build_leaves_previous_data(tmp_path, cards):
    src = tmp_path / "toy.csv"
    src.write_text("x\n")
    calls = []
    spec = _spec(tmp_path, src, calls)
    out = prepare(spec, root=tmp_path / "root", record_checksums=True)

    def broken(sources, out_dir):
        (out_dir / "half.json").write_text("{")
        raise RuntimeError("crash mid-build")

    spec.build = broken
    with pytest.raises(RuntimeError):
        prepare(spec, root=tmp_path / "root", force=True)
    assert (out / "toy.json").is_file() and not (out / "half.json").exists()
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["toy"]


def test_registered_real_datasets_verify_against_cards():
    """Every registered real data set whose source is installed matches its card's checksums."""
    specs = coredata.registered_datasets()
    if not specs:
        pytest.skip("no domain has registered data sets yet")
    checked = 0
    for spec in specs.values():
        try:
            sources = spec.locate()
        except SourceMissingError:
            continue
        expected = read_card_checksums(spec.card)
        assert expected, f"dataset card {spec.card} records no source checksums"
        coredata.verify_sources(spec, sources)
        checked += 1
    assert checked > 0


def test_ensure_dataset_prepares_once_then_reuses(tmp_path, cards):
    from core.data import ensure_dataset

    src = tmp_path / "toy.csv"
    src.write_text("a\n")
    calls = []
    spec = _spec(tmp_path, src, calls)
    first = ensure_dataset(spec, root=tmp_path / "root")
    second = ensure_dataset(spec, root=tmp_path / "root")
    assert first == second and len(calls) == 1
