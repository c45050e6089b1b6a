"""Session 14's real-use pass: files an imaging group brings that the earlier passes did not cover.

* A NIfTI with neither a qform nor an sform (qform_code = sform_code = 0: ANALYZE-era conversions, some research tools'
  outputs). Readers place it by its voxel sizes alone — the NIfTI standard's method 1, which ITK (and so Slicer and
  ITK-SNAP) follows: at the origin, no flip — while nibabel makes up a flipped, centred affine. The mask was written with
  nibabel's affine as an sform (code 1), so in those viewers it sat mirrored left-right and shifted beside its image. It
  now keeps the input's codes (none), and every reader places mask and image alike.
* Label maps as stored by other tools: a uint16 map with 65535 as its 'ignore' value was refused as "span -1..1" (the
  int16 cast came before the range check), and an int32 value 65537 became class 1 without a word. The range is now
  checked on the stored values; float labels within rounding of an integer (1.0000001) are still those classes, and a
  fractional label names how many voxels are off and an example value.
* A NIfTI whose spatial unit (xyzt_units) is metres — pixdim 0.002 for a 2 mm voxel, as the standard allows — was refused
  as an "absurd voxel spacing (0.002, ...) mm; check the header's units", though the header said exactly what it meant
  (ITK reads it as 2 mm). It is read in millimetres now, and its mask is written in the file's own units and forms.
* A dual-echo (or dynamic, or diffusion) MR acquisition stored as one classic series: two images at every slice position.
  The header check counted them as a grid twice as deep and passed; the reader then said only "duplicate slice positions".
  Both now name how many images lie at each position and the tag that tells them apart, and say how to split them.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from domains.medical.io import load_volume, save_mask_like
from domains.medical.validation import MedicalInputError, check_label_array


def test_a_nifti_without_qform_or_sform_gets_a_mask_every_reader_places_on_its_image(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    data = np.zeros((20, 22, 18), dtype=np.float32)
    data[2:8, 5:15, 4:10] = 100.0  # off-centre, on one side: a mirrored mask would miss it
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.5, 1.0]))
    img.set_sform(None, code=0)
    img.set_qform(None, code=0)
    src = tmp_path / "analyze-era.nii.gz"
    nib.save(img, src)
    vol = load_volume(src)
    out = save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "mask.nii.gz")
    mask = nib.load(out)
    assert int(mask.header["sform_code"]) == 0 and int(mask.header["qform_code"]) == 0  # was sform_code 1 (nibabel's made-up affine)
    np.testing.assert_allclose(mask.header["pixdim"][1:4], [2.0, 2.0, 2.5])
    np.testing.assert_allclose(load_volume(out).affine, vol.affine)  # nibabel (and so our readers) place both alike too
    image_itk, mask_itk = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    for get in ("GetOrigin", "GetDirection", "GetSpacing"):
        np.testing.assert_allclose(getattr(mask_itk, get)(), getattr(image_itk, get)(), err_msg=get)  # was mirrored and shifted
    # the mask's voxels where ITK puts the object: the same physical points as the image's bright voxels
    assert np.array_equal(sitk.GetArrayFromImage(mask_itk).astype(bool), sitk.GetArrayFromImage(image_itk) > 50)


def test_label_values_are_checked_as_stored_not_after_the_int16_cast():
    lab = np.zeros((10, 10, 10), dtype=np.uint16)
    lab[2:5, 2:5, 2:5] = 1
    lab[6:8, 6:8, 6:8] = 65535  # an 'ignore' region, as many uint16 label maps mark it
    with pytest.raises(MedicalInputError, match=r"^ign\.nii: label values span 0\.\.65535; expected 0\.\.4$"):  # was "-1..1"
        check_label_array(lab, "ign.nii", 5)
    wraps = np.zeros((10, 10, 10), dtype=np.int32)
    wraps[2:5, 2:5, 2:5] = 65537
    with pytest.raises(MedicalInputError, match=r"label values span 0\.\.65537; expected 0\.\.4"):  # was read as class 1
        check_label_array(wraps, "wraps.nii", 5)
    with pytest.raises(MedicalInputError, match=r"label values span 0\.\.65537; expected 0\.\.32767"):  # no class count: int16's range
        check_label_array(wraps, "wraps.nii")

    floats = np.zeros((10, 10, 10), dtype=np.float32)
    floats[2:5, 2:5, 2:5] = 1.0000001
    floats[6:8, 6:8, 6:8] = 2.9999999
    out = check_label_array(floats, "f.nii", 5)
    assert out.dtype == np.int16 and sorted(np.unique(out).tolist()) == [0, 1, 3]
    floats[0, 0, :3] = 0.5
    with pytest.raises(MedicalInputError) as e:
        check_label_array(floats, "partial.nii", 5)
    assert str(e.value) == ("partial.nii: label volume holds non-integer values; expected integer class ids (found 3 voxel(s) off an "
                            "integer, e.g. 0.5)")


@pytest.mark.parametrize("tag, values", [("EchoNumbers", (1, 2)), ("TemporalPositionIdentifier", (1, 2, 3))])
def test_a_series_of_several_images_at_each_position_is_named_from_the_headers_and_volume_picks_one(tmp_path, dicom_writer, tag, values):
    import shutil

    import pydicom

    from domains.medical.io import DicomFolder, check_input

    rng = np.random.default_rng(3)
    mr = rng.integers(0, 800, size=(16, 14, 6)).astype(np.int16)
    folder = dicom_writer(tmp_path / "dual-echo", mr, spacing=(1.0, 1.0, 2.0), modality="MR")
    first = sorted(folder.iterdir())
    for v in reversed(values):  # every volume's images at the same positions, one series UID (as a scanner exports them)
        for f in first:
            ds = pydicom.dcmread(f)
            setattr(ds, tag, v)
            ds.RescaleIntercept = -1024 + 100 * v  # volume v holds mr + 100 v
            ds.InstanceNumber = int(ds.InstanceNumber) + 100 * v
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / f"V{v}-{f.name}")
    for f in first:
        f.unlink()
    k = len(values)
    expected = (rf"dual-echo: {k} images at each of its 6 slice positions \({tag} {', '.join(map(str, values))}\): a multi-echo, "
                rf"dynamic or diffusion series holds {k} volumes, one per echo or time point; pick one with --volume 0\.\.{k - 1} "
                rf"\(in {tag} order; infer, score\)")
    for call in (lambda: check_input(folder, 3.0), lambda: load_volume(folder)):  # the check passed, as a grid k times as deep
        with pytest.raises(MedicalInputError, match=expected):
            call()
    for i, v in enumerate(values):  # --volume i: the images of the i-th tag value, at every position, in place
        assert check_input(folder, 3.0, volume=i)[0] == mr.shape
        np.testing.assert_array_equal(load_volume(folder, volume=i).data, (mr + 100 * v).astype(np.float32))
    assert DicomFolder(folder).volume_count() == k
    with pytest.raises(MedicalInputError, match=rf"--volume {k}: .*dual-echo holds {k} volumes \({tag} .*\); expected 0\.\.{k - 1}"):
        load_volume(folder, volume=k)
    one = tmp_path / "one-echo"
    one.mkdir()
    for f in folder.glob("V1-*"):
        shutil.copy(f, one / f.name)
    np.testing.assert_array_equal(load_volume(one).data, (mr + 100).astype(np.float32))  # one volume per folder reads as before
    assert DicomFolder(one).volume_count() is None
    with pytest.raises(MedicalInputError, match=r"--volume 0: .*one-echo is a 3D series .* leave --volume out"):
        load_volume(one, volume=0)
    shutil.copy(next(folder.glob("V2-*")), one / "stray.dcm")  # one repeated position is not a second volume: named as before
    with pytest.raises(MedicalInputError, match="duplicate slice positions"):
        load_volume(one)
    (one / "stray.dcm").unlink()
    for f in sorted(one.iterdir()):  # the same files copied in twice: not called a multi-echo series
        shutil.copy(f, one / f"copy-{f.name}")
    with pytest.raises(MedicalInputError, match=r"one-echo: holds each of its 6 slices 2 times, under the same InstanceNumbers"):
        load_volume(one)


def test_a_series_whose_slices_have_their_own_rescale_slope_and_intercept_reads_as_the_values_they_mean(tmp_path, dicom_writer):
    """Handled, asserted (no change): each slice is rescaled by its own RescaleSlope/RescaleIntercept (scanners that
    rescale per slice, e.g. to use the full integer range), not by the first slice's."""
    import pydicom

    rng = np.random.default_rng(4)
    hu = (rng.integers(-250, 500, size=(16, 14, 4)) * 4).astype(np.int16)  # multiples of 4: every slope below divides them
    folder = dicom_writer(tmp_path / "ct", hu, spacing=(1.0, 1.0, 2.0))
    for k, f in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(f)
        slope, intercept = (1, 2, 0.5, 4)[k], (-1024, -2048, -1000, 0)[k]
        ds.PixelData = ((hu[:, :, k].T.astype(np.float64) - intercept) / slope).astype(np.int16).tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.save_as(f)
    np.testing.assert_array_equal(load_volume(folder).data, hu.astype(np.float32))


@pytest.mark.parametrize("forms", ["qform and sform", "sform only", "neither"])
def test_a_nifti_in_metres_is_read_in_millimetres_and_its_mask_keeps_its_units(tmp_path, forms):
    sitk = pytest.importorskip("SimpleITK")
    from domains.medical.io import check_input, header_geometry

    data = np.zeros((20, 22, 18), dtype=np.int16)
    data[2:8, 5:15, 4:10] = 100
    metres = np.array([[-0.002, 0, 0, 0.03], [0, 0.002, 0, -0.02], [0, 0, 0.0025, 0.01], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(data, metres)
    img.header.set_xyzt_units("meter")
    img.set_qform(metres if forms == "qform and sform" else None, code=1 if forms == "qform and sform" else 0)
    if forms == "neither":
        img.set_sform(None, code=0)
    src = tmp_path / "metres.nii.gz"
    nib.save(img, src)
    assert check_input(src, 3.0) == (data.shape, pytest.approx((2.0, 2.0, 2.5)))  # was "absurd voxel spacing (0.002, 0.002, 0.0025) mm"
    vol = load_volume(src)
    if forms != "neither":  # the same physical grid as the millimetre file (what evaluate compares a label against)
        mm = metres.copy()
        mm[:3] *= 1000
        np.testing.assert_allclose(vol.affine, mm, atol=1e-6)
        nib.save(nib.Nifti1Image(data, mm), tmp_path / "mm.nii.gz")
        np.testing.assert_allclose(header_geometry(src)[1], header_geometry(tmp_path / "mm.nii.gz")[1], atol=1e-6)
    out = save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "mask.nii.gz")
    assert nib.load(out).header.get_xyzt_units()[0] == "meter"
    np.testing.assert_allclose(load_volume(out).affine, vol.affine, atol=1e-6)
    image_itk, mask_itk = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    for get in ("GetOrigin", "GetDirection", "GetSpacing"):
        np.testing.assert_allclose(getattr(mask_itk, get)(), getattr(image_itk, get)(), atol=1e-6, err_msg=get)
    np.testing.assert_allclose(image_itk.GetSpacing(), (2.0, 2.0, 2.5), atol=1e-6)  # ITK reads it in millimetres too


def test_a_nifti_in_microns_is_checked_in_millimetres(tmp_path):
    from domains.medical.io import check_input

    img = nib.Nifti1Image(np.ones((10, 10, 10), dtype=np.float32), np.diag([50.0, 50.0, 50.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "mouse.nii.gz")
    with pytest.raises(MedicalInputError, match=r"absurd voxel spacing \(0\.05, 0\.05, 0\.05\) mm"):  # was "(50, 50, 50) mm"
        check_input(tmp_path / "mouse.nii.gz", 3.0)


def test_an_in_memory_nifti_in_metres_is_segmented_in_millimetres_as_its_file_is_read(tmp_path):
    """``Segmenter.predict`` takes a nibabel image too: it kept the header's metres as millimetres (spacing 0.002 mm) where
    ``load_volume`` of the same file reads 2 mm."""
    from domains.medical.predict import Segmenter

    metres = np.array([[-0.002, 0, 0, 0.03], [0, 0.002, 0, -0.02], [0, 0, 0.0025, 0.01], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(np.ones((10, 12, 8), dtype=np.float32), metres)
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "metres.nii.gz")
    in_memory = Segmenter._as_volume(img)
    np.testing.assert_allclose(in_memory.affine, load_volume(tmp_path / "metres.nii.gz").affine)
    assert in_memory.spacing == pytest.approx((2.0, 2.0, 2.5))  # was (0.002, 0.002, 0.0025)


def test_score_takes_a_detached_nrrd_header_and_its_data_file_as_one_volume_keyed_by_its_voxels(tmp_path):
    """Slicer's 'scan.nhdr + scan.raw.gz': score took the data file for an input of its own (quarantined as 'not a supported
    volume'), and keyed the volume by its header's bytes alone — new voxels under the same header kept the id (and so the
    finished job's rows and masks)."""
    import nrrd

    from domains.medical.io import content_id
    from domains.medical.scoring import folder_entries

    inp = tmp_path / "in"
    inp.mkdir()
    first, second = _two_volumes()
    header = {"space": "left-posterior-superior", "space directions": np.diag([2.0, 2.0, 2.5]), "space origin": [-10.0, 4.0, 0.0]}
    nrrd.write(str(inp / "scan.nhdr"), first, header, detached_header=True)
    nib.save(nib.Nifti1Image(first, np.eye(4)), inp / "other.nii.gz")
    assert sorted(p.name for p in inp.iterdir()) == ["other.nii.gz", "scan.nhdr", "scan.raw.gz"]
    assert [p.name for p in folder_entries(inp)] == ["other.nii.gz", "scan.nhdr"]  # the data file is part of scan.nhdr
    before, head = content_id(inp / "scan.nhdr"), (inp / "scan.nhdr").read_bytes()
    nrrd.write(str(inp / "scan.nhdr"), second, header, detached_header=True)  # new voxels ...
    (inp / "scan.nhdr").write_bytes(head)  # ... under the very same header bytes
    assert content_id(inp / "scan.nhdr") != before
    np.testing.assert_array_equal(load_volume(inp / "scan.nhdr").data, second)


def _two_volumes() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.random((8, 9, 10)).astype(np.float32), rng.random((8, 9, 10)).astype(np.float32)


def test_a_nrrd_in_left_anterior_superior_space_reads_where_the_same_grid_in_lps_does(tmp_path):
    """NRRD defines three anatomical spaces (RAS, LAS, LPS); LAS was refused as 'not supported'. The same grid written in
    LAS and in LPS coordinates is the same volume in the same place."""
    import nrrd

    data = _two_volumes()[0]
    lps_dirs, lps_origin = np.array([[0.0, 2.0, 0.0], [-1.5, 0.0, 0.0], [0.0, 0.2, 3.0]]), np.array([-40.0, 25.0, 12.0])
    flip_y = np.array([1.0, -1.0, 1.0])  # LPS -> LAS: the second axis points the other way
    nrrd.write(str(tmp_path / "lps.nrrd"), data, {"space": "left-posterior-superior", "space directions": lps_dirs, "space origin": lps_origin})
    nrrd.write(str(tmp_path / "las.nrrd"), data, {"space": "left-anterior-superior", "space directions": lps_dirs * flip_y,
                                                  "space origin": lps_origin * flip_y})
    lps, las = load_volume(tmp_path / "lps.nrrd"), load_volume(tmp_path / "las.nrrd")  # was "NRRD space 'left-anterior-superior' is not supported"
    np.testing.assert_allclose(las.affine, lps.affine)
    np.testing.assert_array_equal(las.data, lps.data)
    nrrd.write(str(tmp_path / "xyz.nrrd"), data, {"space": "scanner-xyz", "space directions": lps_dirs})
    with pytest.raises(MedicalInputError, match=r"NRRD space 'scanner-xyz' is not supported \(expected right-anterior-superior, "):
        load_volume(tmp_path / "xyz.nrrd")


def test_score_given_a_dicom_series_folder_itself_is_one_line_pointing_to_infer(tmp_path, dicom_writer):
    """`score --input <the series folder>` made every slice an item, each quarantined as 'a single DICOM file is one slice'
    (a run of N quarantine rows); it is one line from the listing of --input (score calls it before its run folder exists),
    naming what the folder is and what to give instead."""
    from domains.medical.scoring import folder_entries

    series = dicom_writer(tmp_path / "series", np.zeros((8, 8, 5), dtype=np.int16) + 40, spacing=(1.0, 1.0, 2.0))
    with pytest.raises(MedicalInputError) as e:
        folder_entries(series)
    msg = str(e.value)
    assert "\n" not in msg and "holds 5 DICOM files and no sub-folder: it is a series" in msg and "domains.medical.infer --input" in msg, msg
    (series.parent / "study").mkdir()
    series.rename(series.parent / "study" / "series")
    assert [p.name for p in folder_entries(series.parent / "study")] == ["series"]  # a folder of series folders, as before
