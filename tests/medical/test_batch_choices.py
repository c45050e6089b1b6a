"""Choices within an input, in a batch and for NRRD.

``score`` had no ``--series`` / ``--volume``, though ``infer`` has them: a batch holding a 4D NIfTI or a folder of several
DICOM series quarantined those items with the reason "segment one with infer --volume 0..1" / "pick one with --series
... (infer)" — a flag of another command, and no way to score them in the batch. ``score --volume N`` now segments volume N
of every 4D file and ``--series S`` series S of every DICOM folder, through ``infer``'s reader (``load_volume(series=,
volume=)``); other items are read as they are, and an item without that volume/series is quarantined naming what it holds.

A 4D NRRD (a DWI's gradients on a list axis, written first, as Slicer writes it) had no choice at all: ``--volume`` was
refused as "not a NIfTI file", and the reader only said "a 4D series: pick one volume first". It is now read as a 4D
NIfTI is: refused from the header naming how many volumes it holds, and ``--volume k`` reads volume k on the spatial
axes' geometry.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from domains.medical.io import check_input, load_volume, probe_volume, save_mask_like, volume_count
from domains.medical.validation import MedicalInputError

LPS_DIRS = np.array([[0.0, 2.5, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.3, 3.0]])  # oblique, anisotropic: a geometry to get wrong
NAN3 = [np.nan] * 3


def _boxes(shape=(12, 12, 10), sides=(2, 3)) -> list[np.ndarray]:
    """Volumes holding a bright cube of side ``sides[k]`` (side**3 voxels above 50) on a dim background."""
    out = []
    for side in sides:
        v = np.full(shape, 10.0, dtype=np.float32)
        v[2:2 + side, 3:3 + side, 1:1 + side] = 100.0
        out.append(v)
    return out


# --- 4D NRRD ------------------------------------------------------------------------------------------------------


def _nrrd_4d(path: Path, layout: str) -> tuple[np.ndarray, Path]:
    """Three volumes on a list axis, written first (Slicer's DWI layout) or last (with spacings only); and the plain 3D
    NRRD of the same geometry, whose affine the picked volume must have."""
    import nrrd

    vols = np.stack(_boxes(sides=(2, 3, 4)))  # (3, x, y, z)
    plain = path.with_name(f"plain-{layout}.nrrd")
    if layout == "first":
        nrrd.write(str(path), vols, {"space": "left-posterior-superior", "space directions": np.array([NAN3, *LPS_DIRS]),
                                     "space origin": [-40.0, 30.0, 12.0], "kinds": ["list", "domain", "domain", "domain"]})
        nrrd.write(str(plain), vols[0], {"space": "left-posterior-superior", "space directions": LPS_DIRS, "space origin": [-40.0, 30.0, 12.0]})
    else:
        nrrd.write(str(path), np.moveaxis(vols, 0, -1), {"spacings": [2.0, 2.5, 3.0, np.nan]})
        nrrd.write(str(plain), vols[0], {"spacings": [2.0, 2.5, 3.0]})
    return vols, plain


@pytest.mark.parametrize("layout", ["first", "last"])
def test_a_4d_nrrd_is_refused_from_its_header_naming_its_volumes_and_volume_picks_one(tmp_path, layout, monkeypatch):
    import nrrd

    path = tmp_path / "dwi.nrrd"
    vols, plain = _nrrd_4d(path, layout)
    ref = load_volume(plain)
    assert volume_count(path) == 3 and volume_count(plain) is None  # the dashboard's selectbox count
    for k in range(3):
        vol = load_volume(path, volume=k)
        np.testing.assert_array_equal(vol.data, vols[k])
        np.testing.assert_allclose(vol.affine, ref.affine)  # the spatial axes' geometry, not the identity
        assert check_input(path, 3.0, volume=k) == check_input(plain, 3.0)  # the header probe agrees with what is read
    mask = save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "mask.nii.gz")
    assert nib.load(mask).shape == vols.shape[1:] and np.allclose(nib.load(mask).affine, ref.affine)

    def no_voxels(*a, **k):
        raise AssertionError("the voxels were read before the refusal")

    monkeypatch.setattr(nrrd, "read", no_voxels)  # refused from the header, as a 4D NIfTI is
    for call in (lambda: probe_volume(path), lambda: load_volume(path)):
        with pytest.raises(MedicalInputError) as e:
            call()
        msg = str(e.value)
        assert "dwi.nrrd: expected a 3D volume, got 4D data" in msg and "3 volumes along its" in msg, msg
        assert "--volume 0..2 (infer, score)" in msg and "\n" not in msg, msg
    with pytest.raises(MedicalInputError, match=r"--volume 3: .*dwi\.nrrd has 3 volumes along its .*expected 0\.\.2"):
        load_volume(path, volume=3)
    monkeypatch.undo()
    with pytest.raises(MedicalInputError, match=r"--volume 0: .*plain-.*\.nrrd is a 3D volume .* not a 4D series; leave --volume out"):
        load_volume(plain, volume=0)


def test_a_colour_or_vector_nrrd_is_not_offered_as_volumes(tmp_path):
    """Only a 'list'/'time' axis holds volumes of one series: an RGB or displacement-vector NRRD's components are not
    volumes to pick (it was refused as a '4D series: pick one volume first')."""
    import nrrd

    vols = np.stack(_boxes(sides=(2, 3, 4)))
    for kind in ("RGB-color", "3-vector"):
        path = tmp_path / f"{kind}.nrrd"
        nrrd.write(str(path), vols, {"space": "left-posterior-superior", "space directions": np.array([NAN3, *LPS_DIRS]),
                                     "kinds": [kind, "domain", "domain", "domain"]})
        assert volume_count(path) is None  # no volumes for the page to offer; the read is refused, with or without --volume
        for call in (lambda: probe_volume(path), lambda: load_volume(path), lambda: load_volume(path, volume=0)):
            with pytest.raises(MedicalInputError, match=rf"axis 1 of 4 holds 3 components of kind '{kind}' \(a colour, vector or tensor "
                                                        r"image\), not grey-value volumes; expected a 3D volume"):
                call()


# --- score --series / --volume ------------------------------------------------------------------------------------


def _series(folder: Path, data: np.ndarray, number: int, dicom_writer) -> str:
    """An MR series with SeriesNumber ``number`` written into ``folder`` (beside what is there); its series-<hash>."""
    import pydicom

    tmp = dicom_writer(folder.parent / f"tmp-{number}", data.astype(np.int16), spacing=(2.0, 2.0, 2.0), modality="MR")
    folder.mkdir(exist_ok=True)
    for f in sorted(tmp.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesNumber = number
        ds.save_as(folder / f"S{number}-{f.name}")
    shutil.rmtree(tmp)
    return "series-" + hashlib.sha256(str(ds.SeriesInstanceUID).encode()).hexdigest()[:12]


def _dual_echo(folder: Path, echoes: list[np.ndarray], dicom_writer) -> None:
    """One MR series (SeriesNumber 3) holding each echo's image at every slice position (EchoNumbers 1, 2, ...), as a scanner
    exports it."""
    import pydicom

    uid = None
    folder.mkdir()
    for e, data in enumerate(echoes, start=1):
        tmp = dicom_writer(folder.parent / f"echo-{e}", data.astype(np.int16), spacing=(2.0, 2.0, 2.0), modality="MR")
        for f in sorted(tmp.iterdir()):
            ds = pydicom.dcmread(f)
            uid = uid or ds.SeriesInstanceUID
            ds.SeriesInstanceUID, ds.EchoNumbers, ds.InstanceNumber, ds.SeriesNumber = uid, e, int(ds.InstanceNumber) + 100 * e, 3
            ds.save_as(folder / f"E{e}-{f.name}")
        shutil.rmtree(tmp)


@pytest.fixture
def batch(tmp_path, dicom_writer) -> dict:
    """A batch as an imaging group brings it: a 4D NIfTI (two volumes), a 3D NIfTI, a study folder holding series 3 and 4,
    a folder holding series 3 alone, a dual-echo series (two images at each position)."""
    inp = tmp_path / "in"
    inp.mkdir()
    v0, v1 = _boxes(sides=(2, 3))
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.stack([v0, v1], -1), aff), inp / "fmri.nii.gz")
    nib.save(nib.Nifti1Image(_boxes(sides=(4,))[0], aff), inp / "t1.nii.gz")
    s3, s4 = _boxes(sides=(2, 4))
    _series(inp / "study", s3, 3, dicom_writer)
    four = _series(inp / "study", s4[:, :, :8], 4, dicom_writer)
    _series(inp / "only3", s3, 3, dicom_writer)
    _dual_echo(inp / "echoes", _boxes(sides=(2, 3)), dicom_writer)
    return {"input": inp, "series4": four}


def _scorer(tmp_path: Path, sources: dict, **choice):
    """The batch scorer with a stand-in network (voxels above 50 are the object): what is read decides the row."""
    from domains.medical.scoring import SegmentationScorer

    scorer = SegmentationScorer("model-run", str(tmp_path / "masks"), sources=sources, **choice)
    scorer._seg = SimpleNamespace(class_names=["background", "object"],
                                  segment=lambda vol: SimpleNamespace(mask=(vol.data > 50).astype(np.uint8), mean_confidence=1.0))
    return scorer


def _score(scorer, sources: dict, name: str):
    from core.scoring import WorkItem

    (vid,) = [k for k, p in sources.items() if Path(p).name == name]
    try:
        return scorer.score(WorkItem(id=vid)).iloc[0], vid
    except MedicalInputError as e:
        return str(e), vid


def test_score_segments_the_chosen_volume_and_series_of_every_item_and_names_the_flag_otherwise(tmp_path, batch):
    from domains.medical.scoring import folder_entries, work_items

    _, sources = work_items(folder_entries(batch["input"]))
    ml = 8 / 1000  # one 2 mm voxel, in mL

    plain = _scorer(tmp_path, sources)  # no flags: the items with a choice are refused naming it, in score's words
    reason, vid = _score(plain, sources, "fmri.nii.gz")
    assert reason.startswith(f"{vid}: expected a 3D volume, got 4D data") and "2 volumes along its 4th axis" in reason, reason
    assert "--volume 0..1 (infer, score)" in reason and "fmri" not in reason, reason
    reason, vid = _score(plain, sources, "study")
    assert reason.startswith(f"{vid}: holds 2 DICOM series: series-") and "(10 slice(s) of 12x12, MR, SeriesNumber 3)" in reason, reason
    assert f"{batch['series4']} (8 slice(s) of 12x12, MR, SeriesNumber 4)" in reason, reason
    assert "--series <SeriesNumber> (infer, score)" in reason and "study" not in reason, reason
    reason, vid = _score(plain, sources, "echoes")
    assert reason.startswith(f"{vid}: 2 images at each of its 10 slice positions (EchoNumbers 1, 2)") and "--volume 0..1" in reason, reason
    row, _ = _score(plain, sources, "t1.nii.gz")
    assert row["ml_object"] == pytest.approx(64 * ml) and "volume_index" not in row

    chosen = _scorer(tmp_path, sources, volume=1, series="4")  # score --volume 1 --series 4
    row, _ = _score(chosen, sources, "fmri.nii.gz")
    assert row["ml_object"] == pytest.approx(27 * ml) and row["volume_index"] == 1  # volume 1 (the 3-voxel cube), not 0
    row, _ = _score(chosen, sources, "t1.nii.gz")  # a 3D file in the same batch is read as it is
    assert row["ml_object"] == pytest.approx(64 * ml) and row["volume_index"] is None
    row, _ = _score(_scorer(tmp_path, sources, volume=1), sources, "echoes")  # the second echo (the 3-voxel cube)
    assert row["ml_object"] == pytest.approx(27 * ml) and row["volume_index"] == 1 and list(row["shape"]) == [12, 12, 10]
    row, _ = _score(chosen, sources, "study")
    assert f"series-{row['series_hash']}" == batch["series4"] and row["ml_object"] == pytest.approx(64 * ml)
    assert list(row["shape"]) == [12, 12, 8] and row["volume_index"] is None  # a 3D series in the same batch: read as it is
    reason, vid = _score(chosen, sources, "only3")  # a folder without series 4 is refused naming what it holds
    assert reason.startswith("--series '4': matches none of the 1 DICOM series in") and "SeriesNumber 3" in reason, reason
    assert "only3" not in reason, reason

    reason, _ = _score(_scorer(tmp_path, sources, volume=2), sources, "fmri.nii.gz")
    assert "fmri.nii.gz has 2 volumes" not in reason and "has 2 volumes along its 4th axis; expected 0..1" in reason, reason

    # the choice is part of the job's identity (another job, not the finished one), and absent when not made: jobs
    # written before the flags existed keep theirs
    assert "series" not in plain.config() and "volume" not in plain.config()
    assert chosen.config()["series"] == "4" and chosen.config()["volume"] == 1


def test_score_has_the_flags_with_their_ranges(capsys):
    from core.config import parse_config
    from domains.medical.config import ScoreConfig

    cfg = parse_config(ScoreConfig, ["--volume", "2", "--series", "series-0123abcd"])
    assert (cfg.volume, cfg.series) == (2, "series-0123abcd")
    with pytest.raises(SystemExit):
        parse_config(ScoreConfig, ["--volume", "-1"])
    assert "--volume -1: expected >= 0" in capsys.readouterr().err


@pytest.mark.slow
def test_score_command_scores_a_batch_of_4d_files_and_multi_series_folders_with_the_flags(tiny_run, tmp_path, batch, capsys):
    """The command end to end (tiny model): without the flags the two items with a choice are quarantined naming score's
    flag, with them every item is scored."""
    import pandas as pd

    from domains.medical.score import main

    runs = ["--runs-dir", str(tiny_run.parent.parent), "--model-run", str(tiny_run), "--no-track", "--input", str(batch["input"])]
    assert main([*runs, "--out", str(tmp_path / "no-choice")]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped vol-") == 3 and "--volume 0..1 (infer, score)" in err and "(infer, score), or put one" in err, err
    assert main([*runs, "--out", str(tmp_path / "chosen"), "--volume", "1", "--series", "3"]) == 0
    err = capsys.readouterr().err
    assert "skipped" not in err, err
    df = pd.read_parquet(tmp_path / "chosen")
    assert len(df) == 5 and df["volume_index"].dropna().tolist() == [1, 1]


def test_score_volume_names_an_unreadable_dicom_folder_as_the_reader_does(tmp_path, dicom_writer):
    """``score --volume`` counts a DICOM folder's volumes before reading it: a slice without ImageOrientationPatient escaped
    that count as a bare AttributeError, where the reader names the folder in one line."""
    import pydicom

    from domains.medical.scoring import read_item

    folder = dicom_writer(tmp_path / "series", np.zeros((8, 8, 4), np.int16))
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        del ds.ImageOrientationPatient
        ds.save_as(f)
    with pytest.raises(MedicalInputError) as by_reader:
        load_volume(folder)
    with pytest.raises(MedicalInputError, match="ImageOrientationPatient") as by_score:
        read_item(folder, None, 0)
    assert str(by_score.value) == str(by_reader.value)
