"""Sixth real-use pass: scans as other people's exports hand them over, built from the bundled real volumes (the
InVesalius head CT, MNI152) with nibabel/pydicom — a 4D NIfTI, a DICOM folder holding a localizer beside the axial
series, a series missing a slice, a compression no installed decoder reads, damaged JPEG 2000 data.

Each of these failed differently before: the 4D file was refused only after all its voxels were read, with no way to
pick a volume; the two-series folder was 'holds 2 DICOM series' with no way to pick one; the missing slice read as an
'uneven slice spacing' to resample (which would invent the missing anatomy); the compressed series printed pydicom's
multi-line plugin list cut mid-word; JP2 data with a zero-length box hung pydicom's reader forever.
(evaluate's label grid and the progress bars: ``test_evaluate_label_grid_and_progress.py``.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domains.medical.io import check_input, load_volume, probe_volume, save_mask_like
from domains.medical.validation import MedicalInputError

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "datasets/data/msd-brain-aal"
CT = REPO / "datasets/data/msd-headct-bone"
LOCALIZER = ["ORIGINAL", "PRIMARY", "LOCALIZER"]


def _first(folder: Path) -> Path:
    files = sorted(folder.glob("*.nii*"))
    if not files:
        pytest.skip(f"{folder} is not prepared (python -m core.data prepare medical)")
    return files[0]


@pytest.fixture(scope="module")
def ct_hu() -> np.ndarray:
    """The bundled real head CT (HU), every 4th voxel in-plane: 64 x 64 x 54."""
    return np.asarray(nib.load(_first(CT / "imagesTs")).dataobj)[::4, ::4].astype(np.int16)


def _retag(folder: Path, **tags) -> None:
    import pydicom

    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(ds, k, v)
        ds.save_as(f)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "\t" not in msg, msg
    return msg


# --- 4D NIfTI ---------------------------------------------------------------------------------------------------


def _four_d(tmp_path: Path, slope: float = 1.0) -> tuple[Path, np.ndarray, np.ndarray]:
    img = nib.load(_first(BRAIN / "imagesTs"))
    t1 = np.asarray(img.dataobj)[::3, ::3, ::3].astype(np.float32)
    aff = img.affine.copy()
    aff[:3, :3] *= 3
    series = np.stack([t1, 0.5 * t1, t1 ** 1.1], axis=-1)  # three different volumes
    out = nib.Nifti1Image(np.round(series / slope).astype(np.int16), aff)
    out.header.set_slope_inter(slope, 7.0)  # int16 on disk, floats once scaled: the selected volume must be scaled too
    path = tmp_path / "fmri-like.nii.gz"
    nib.save(out, path)
    return path, np.asarray(nib.load(path).dataobj), aff


def test_a_4d_nifti_is_refused_from_its_header_naming_the_fourth_axis_and_volume_picks_one(tmp_path):
    path, scaled, aff = _four_d(tmp_path, slope=0.25)
    with pytest.raises(MedicalInputError) as e:  # from the header (the probe read it as 3D before: shape[:3])
        probe_volume(path)
    msg = _one_line(e)
    assert "3 volumes along its 4th axis" in msg and "--volume 0..2" in msg
    with pytest.raises(MedicalInputError, match="3 volumes along its 4th axis"):
        load_volume(path)
    for k in range(3):
        vol = load_volume(path, volume=k)
        assert vol.shape == scaled.shape[:3] and np.allclose(vol.affine, aff)
        np.testing.assert_array_equal(vol.data, scaled[..., k].astype(np.float32))  # scl_slope/scl_inter applied to that volume
    assert check_input(path, 3.0, volume=2)[0] == scaled.shape[:3]
    with pytest.raises(MedicalInputError) as e:
        load_volume(path, volume=3)
    assert "expected 0..2" in _one_line(e)
    with pytest.raises(MedicalInputError, match="3D volume .* not a 4D series"):
        load_volume(_first(BRAIN / "imagesTs"), volume=0)


def test_the_mask_of_one_volume_of_a_4d_nifti_is_a_3d_mask_on_its_grid(tmp_path):
    path, scaled, aff = _four_d(tmp_path)
    vol = load_volume(path, volume=1)
    mask = (vol.data > np.percentile(vol.data, 80)).astype(np.uint8)
    out = nib.load(save_mask_like(mask, vol, tmp_path / "mask.nii.gz"))
    assert out.shape == scaled.shape[:3] and out.header["dim"][0] == 3  # not a 4D header with one volume of data
    assert np.allclose(out.affine, aff)
    np.testing.assert_array_equal(np.asarray(out.dataobj), mask)


# --- DICOM: several series in one folder, a missing slice, compressed pixel data ------------------------------------


@pytest.fixture
def localizer_beside_axial(tmp_path, ct_hu, dicom_writer, phi):
    """A folder as a scanner export hands it over: the axial series (SeriesNumber 2, 30 slices of the real CT) and a
    3-slice localizer (SeriesNumber 1, ImageType LOCALIZER), both carrying patient tags."""
    axial = dicom_writer(tmp_path / "axial", ct_hu[:, :, :30], spacing=(3.8, 3.8, 1.5), phi=phi)
    _retag(axial, SeriesNumber=2, ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])
    loc = dicom_writer(tmp_path / "loc", ct_hu[:, :, 20:23], spacing=(3.8, 3.8, 1.5), origin=(-100.0, -120.0, -40.0), phi=phi)
    _retag(loc, SeriesNumber=1, ImageType=LOCALIZER)
    both = tmp_path / "DOE_JANE_export"
    shutil.copytree(axial, both)
    for f in loc.iterdir():
        shutil.copy(f, both / f"LOC_{f.name}")
    return both, axial


def test_a_folder_of_two_series_lists_them_without_patient_fields_and_series_picks_one(localizer_beside_axial, phi):
    both, axial = localizer_beside_axial
    alone = load_volume(axial)
    for call in (lambda: check_input(both, 3.0), lambda: load_volume(both)):  # from the headers, and in the reader
        with pytest.raises(MedicalInputError) as e:
            call()
        msg = _one_line(e)
        assert "holds 2 DICOM series" in msg and "--series" in msg
        assert f"series-{alone.series_hash} (30 slice(s) of 64x64, CT, SeriesNumber 2)" in msg
        assert "(3 slice(s) of 64x64, CT LOCALIZER, SeriesNumber 1)" in msg
        assert not any(str(v) in msg for v in phi.values())
    for pick in (f"series-{alone.series_hash}", alone.series_hash[:8], "2"):
        vol = load_volume(both, series=pick)
        np.testing.assert_array_equal(vol.data, alone.data)
        np.testing.assert_allclose(vol.affine, alone.affine)
        assert vol.series_hash == alone.series_hash
    assert check_input(both, 3.0, series="2")[0] == alone.shape
    with pytest.raises(MedicalInputError) as e:
        load_volume(both, series="5")
    assert "matches none of the 2 DICOM series" in _one_line(e)


def test_a_series_number_two_series_share_is_refused_pointing_to_the_hash(localizer_beside_axial):
    both, _ = localizer_beside_axial
    _retag(both, SeriesNumber=1)
    with pytest.raises(MedicalInputError) as e:
        load_volume(both, series="1")
    assert "matches 2 of the 2 DICOM series" in _one_line(e) and "use the series-<hash>" in str(e.value)


def test_a_series_missing_a_slice_names_the_gap_instead_of_uneven_spacing(tmp_path, ct_hu, dicom_writer):
    folder = dicom_writer(tmp_path / "s", ct_hu[:, :, :20], spacing=(3.8, 3.8, 1.5))
    (folder / "IM0009.dcm").unlink()  # InstanceNumber 10: an incomplete transfer
    with pytest.raises(MedicalInputError) as e:
        load_volume(folder)
    msg = _one_line(e)
    assert "1 slice(s) missing from the DICOM series of 19 slices stepping 1.5 mm" in msg
    assert "InstanceNumber 9 -> 11, a 3 mm gap" in msg


def test_slices_spaced_unevenly_but_not_missing_keep_the_uneven_spacing_message(tmp_path, ct_hu, dicom_writer):
    import pydicom

    folder = dicom_writer(tmp_path / "s", ct_hu[:, :, :6], spacing=(3.8, 3.8, 2.0))
    ds = pydicom.dcmread(folder / "IM0005.dcm")
    ds.ImagePositionPatient = [-100.0, -120.0, 30.0 + 4 * 2.0 + 2.7]  # 2.7 mm after its neighbour: not a whole step
    ds.save_as(folder / "IM0005.dcm")
    with pytest.raises(MedicalInputError, match="uneven slice spacing"):
        load_volume(folder)


def _compress_as(folder: Path, uid: str, payload: bytes) -> None:
    import pydicom
    from pydicom.encaps import encapsulate

    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([payload])
        ds["PixelData"].VR = "OB"
        ds.save_as(f)


def test_a_series_compressed_in_a_syntax_no_installed_decoder_reads_names_it_and_its_packages(tmp_path, ct_hu, dicom_writer):
    from pydicom.pixels import get_decoder

    jpeg_ls = "1.2.840.10008.1.2.4.80"
    if get_decoder(jpeg_ls).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    folder = dicom_writer(tmp_path / "s", ct_hu[:, :, :4], spacing=(3.8, 3.8, 1.5))
    _compress_as(folder, jpeg_ls, b"\xff\xd8\xff\xf7" + bytes(64))
    for call in (lambda: check_input(folder, 3.0), lambda: load_volume(folder)):
        with pytest.raises(MedicalInputError) as e:
            call()
        msg = _one_line(e)
        assert "compressed as JPEG-LS Lossless Image Compression (transfer syntax 1.2.840.10008.1.2.4.80)" in msg
        assert "pip install pylibjpeg pylibjpeg-libjpeg" in msg and "python-gdcm" in msg


def test_damaged_compressed_pixel_data_is_one_line_naming_the_syntax(tmp_path, ct_hu, dicom_writer):
    from pydicom.pixels import get_decoder

    j2k = "1.2.840.10008.1.2.4.90"
    if not get_decoder(j2k).is_available:
        pytest.skip("no JPEG 2000 decoder installed here")
    folder = dicom_writer(tmp_path / "s", ct_hu[:, :, :4], spacing=(3.8, 3.8, 1.5))
    _compress_as(folder, j2k, b"\xff\x4f\xff\x51" + bytes(64))  # a JPEG 2000 codestream marker, then nothing
    with pytest.raises(MedicalInputError) as e:
        load_volume(folder)
    assert "JPEG 2000 Image Compression (Lossless Only) pixel data (transfer syntax 1.2.840.10008.1.2.4.90) cannot be decoded" in _one_line(e)


@pytest.mark.timeout(60)
def test_jp2_data_with_a_zero_length_box_is_refused_instead_of_hanging_the_reader(tmp_path, ct_hu, dicom_writer):
    from pydicom.pixels import get_decoder

    j2k = "1.2.840.10008.1.2.4.90"
    if not get_decoder(j2k).is_available:
        pytest.skip("no JPEG 2000 decoder installed here")
    folder = dicom_writer(tmp_path / "s", ct_hu[:, :, :4], spacing=(3.8, 3.8, 1.5))
    # the JP2 signature box, then zeroed bytes: pydicom 3.0's box walk never advanced (this test hung until its timeout)
    _compress_as(folder, j2k, b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64))
    with pytest.raises(MedicalInputError) as e:
        load_volume(folder)
    assert "is damaged: a JP2 box of length 0 before its codestream" in _one_line(e)


# --- the flags on the command ---------------------------------------------------------------------------------------


def test_infer_volume_and_series_flags_reach_the_reader(tmp_path, tiny_run, localizer_beside_axial, capsys):
    """infer --volume segments one volume of a 4D file (a 3D mask on its grid; the log says the model is loading);
    a two-series folder without --series, or an unknown --series, is one line and exit 2 before any run folder."""
    from domains.medical.infer import main

    runs = ["--runs-dir", str(tiny_run.parent.parent), "--model-run", str(tiny_run), "--no-track"]
    path, scaled, aff = _four_d(tmp_path)
    before = sorted(p.name for p in tiny_run.parent.iterdir())
    both, _ = localizer_beside_axial
    for extra in (["--input", str(both)], ["--input", str(both), "--series", "7"], ["--input", str(path)]):
        assert main([*runs, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("DICOM series" in err or "--volume 0..2" in err), err
    assert sorted(p.name for p in tiny_run.parent.iterdir()) == before
    import logging

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logging.getLogger("suite").addHandler(handler)  # the suite's root logger does not propagate to pytest's
    try:
        assert main([*runs, "--input", str(path), "--volume", "1", "--name", "four-d"]) == 0
    finally:
        logging.getLogger("suite").removeHandler(handler)
    assert any("loading the model" in m for m in records)
    mask = nib.load(tiny_run.parent / "four-d" / "fmri-like_mask.nii.gz")
    assert mask.shape == scaled.shape[:3] and np.allclose(mask.affine, aff)


def test_a_valid_jp2_wrapped_jpeg_2000_series_passes_the_zero_length_box_guard(tmp_path, ct_hu, dicom_writer):
    """The guard above is narrow: a lossless JPEG 2000 series whose frames carry the JP2 boxes (signature, ftyp, jp2h,
    then jp2c — as some exporters wrap them) walks to its codestream and reads back voxel for voxel."""
    import io

    import pydicom
    from PIL import Image, features
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    j2k = "1.2.840.10008.1.2.4.90"
    if not (get_decoder(j2k).is_available and features.check("jpg_2000")):
        pytest.skip("no JPEG 2000 encoder/decoder installed here")
    folder = dicom_writer(tmp_path / "s", ct_hu[:, :, :4], spacing=(3.8, 3.8, 1.5))
    plain = load_volume(folder)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        buf = io.BytesIO()
        Image.fromarray(ds.pixel_array.astype(np.uint16)).save(buf, format="JPEG2000", irreversible=False)  # stored values >= 0
        assert buf.getvalue().startswith(b"\x00\x00\x00\x0cjP  ")  # JP2-wrapped, not a bare codestream
        ds.file_meta.TransferSyntaxUID = j2k
        ds.PixelRepresentation = 0
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.save_as(f)
    np.testing.assert_array_equal(load_volume(folder).data, plain.data)
