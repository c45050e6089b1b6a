"""Analyze 7.5 and NIfTI-pair files (``scan.hdr`` + ``scan.img``: the OASIS-1 cross-sectional MRI release, older SPM/FSL
output) were refused by ``infer``, ``evaluate`` and ``score`` as 'not a supported volume'.

* A NIfTI-pair header (magic ``ni1``) holds the whole NIfTI geometry: it is read by the NIfTI reader, with its checks.
* An Analyze 7.5 header stores voxel sizes but no orientation. It is read as nibabel reads it (radiological, LAS); ITK
  (SimpleITK) agrees on left/right and foot/head but reads the second axis the other way (LPS) and places voxel 0 at the
  origin where nibabel centres the volume. So a warning names the assumption, once, and the mask is written as Analyze with
  the input's own header: any viewer places it where it places the image.
* ``.hdr.gz`` + ``.img.gz`` pairs read; a missing or short ``.img`` is one line naming it and the bytes its header declares,
  from the header alone.
* ``score``: the ``.img`` belongs to its ``.hdr``'s item (as a detached NRRD's data file does), and the content id covers it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from domains.medical.io import check_input, content_id, load_volume, save_mask_like
from domains.medical.validation import MedicalInputError


def _blob() -> np.ndarray:
    data = np.zeros((14, 12, 10), dtype=np.int16)
    data[1:5, 2:6, 6:9] = 100  # off-centre on every axis: a mirrored or shifted mask misses it
    return data


@pytest.fixture
def io_warnings():
    """The warnings domains.medical.io logs (the suite's logger does not propagate to pytest's)."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger = logging.getLogger("suite.medical.io")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_a_nifti_pair_is_read_with_its_whole_geometry_through_the_nifti_checks(tmp_path):
    data = _blob().astype(np.float32)
    aff = np.array([[-1.8, 0.2, 0, 30.0], [0.1, 2.0, 0, -40.0], [0, 0, 2.5, 12.0], [0, 0, 0, 1]])
    pair = nib.Nifti1Pair(data, aff)
    pair.set_qform(aff, code=1)
    pair.set_sform(aff, code=2)
    nib.save(pair, tmp_path / "scan.hdr")
    assert (tmp_path / "scan.hdr").read_bytes()[344:348] == b"ni1\0"
    assert check_input(tmp_path / "scan.hdr", 2.0) == ((14, 12, 10), pytest.approx(tuple(np.sqrt((aff[:3, :3] ** 2).sum(0)))))
    vol = load_volume(tmp_path / "scan.hdr")  # was "not a supported volume (expected .nii, .nii.gz, .nrrd, ...)"
    assert vol.format == "nifti" and vol.orientation_assumed is None and vol.id == "scan"
    np.testing.assert_allclose(vol.affine, aff)
    np.testing.assert_array_equal(vol.data, data)
    out = save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "scan_mask.nii.gz")
    mask = nib.load(out)
    assert out.name == "scan_mask.nii.gz" and mask.header.get_qform(coded=True)[1] == 1 and mask.header.get_sform(coded=True)[1] == 2
    np.testing.assert_allclose(mask.affine, aff, atol=1e-5)

    broken = nib.Nifti1Pair(data, aff)  # the NIfTI header checks apply: a singular sform beside a valid qform
    broken.set_qform(aff, code=1)
    broken.set_sform(np.zeros((4, 4)), code=2)
    nib.save(broken, tmp_path / "broken.hdr")
    with pytest.raises(MedicalInputError, match=r"broken\.hdr: its sform \(sform_code 2\).*while its qform \(qform_code 1\) is a valid"):
        load_volume(tmp_path / "broken.hdr")


def test_an_analyze_file_is_read_as_nibabel_reads_it_warned_once_and_its_mask_overlays_in_itk(tmp_path, io_warnings):
    sitk = pytest.importorskip("SimpleITK")
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's own 'Analyze is deprecated' notice
    data = _blob()
    nib.save(nib.AnalyzeImage(data, np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "oasis.hdr")
    assert (tmp_path / "oasis.hdr").read_bytes()[344:347] not in (b"ni1", b"n+1")

    vol = load_volume(tmp_path / "oasis.hdr")
    load_volume(tmp_path / "oasis.hdr")  # read again (check, then segment): still one warning
    assert vol.format == "analyze" and vol.orientation_assumed == "LAS" and vol.spacing == (2.0, 3.0, 4.0)
    np.testing.assert_array_equal(vol.data, data)
    assert len(io_warnings) == 1 and "\n" not in io_warnings[0], io_warnings
    assert io_warnings[0].startswith(f"{tmp_path / 'oasis.hdr'}: an Analyze 7.5 file stores no orientation; its axes are read as LAS")
    assert "left/right is assumed" in io_warnings[0]

    # the two readers on the same file: same voxels and sizes; the first axis runs right-to-left (radiological) and the
    # third foot-to-head in both; ITK reads the second axis front-to-back (LPS) where nibabel reads it back-to-front (LAS)
    img = sitk.ReadImage(str(tmp_path / "oasis.hdr"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), data)
    itk_ras = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(img.GetDirection()).reshape(3, 3)  # ITK's LPS directions, in RAS
    ours = vol.affine[:3, :3] / np.asarray(vol.spacing)
    assert np.allclose(ours[:, 0], itk_ras[:, 0]) and ours[0, 0] < 0  # left/right: the readers agree (right to left)
    assert np.allclose(ours[:, 2], itk_ras[:, 2])  # inferior to superior in both
    assert np.allclose(ours[:, 1], -itk_ras[:, 1])  # anterior/posterior: they differ
    assert not np.allclose(vol.affine[:3, 3], np.asarray(img.GetOrigin()) * [-1, -1, 1])  # and so does the origin

    # so the mask keeps the input's own Analyze header: each reader places it exactly where it places the image
    out = save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "oasis_mask.nii.gz")
    assert out.name == "oasis_mask.hdr" and (tmp_path / "oasis_mask.img").is_file() and not (tmp_path / "oasis_mask.nii.gz").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    mask_itk = sitk.ReadImage(str(out))
    assert (mask_itk.GetOrigin(), mask_itk.GetSpacing(), mask_itk.GetDirection()) == (img.GetOrigin(), img.GetSpacing(), img.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask_itk).transpose(2, 1, 0), data > 50)
    mask_nib = nib.load(out)
    assert not isinstance(mask_nib.header, nib.Nifti1Header) and np.allclose(mask_nib.affine, nib.load(tmp_path / "oasis.hdr").affine)
    np.testing.assert_array_equal(np.asanyarray(mask_nib.dataobj), data > 50)


def test_gzipped_pairs_read_and_a_missing_or_short_voxel_file_is_named_from_the_header(tmp_path):
    data = _blob()
    nib.save(nib.AnalyzeImage(data, None), tmp_path / "zipped.hdr.gz")  # writes zipped.img.gz beside it
    assert (tmp_path / "zipped.img.gz").is_file()
    np.testing.assert_array_equal(load_volume(tmp_path / "zipped.hdr.gz").data, data)
    with pytest.raises(MedicalInputError, match=r"zipped\.img\.gz: the voxel file of the Analyze/NIfTI pair zipped\.hdr\.gz; pass its header"):
        load_volume(tmp_path / "zipped.img.gz")

    big = nib.AnalyzeImage(np.zeros((2, 2, 2), np.int16), None)  # a header declaring 200^3 int16 voxels, 16 MB
    big.header.set_data_shape((200, 200, 200))
    nib.save(nib.AnalyzeImage(np.zeros((2, 2, 2), np.int16), None), tmp_path / "scan.hdr")
    (tmp_path / "scan.hdr").write_bytes(big.header.binaryblock)
    (tmp_path / "scan.img").unlink()
    missing = r"scan\.img: missing — the voxel file of scan\.hdr, whose header declares 16,000,000 bytes of voxel data"
    with pytest.raises(MedicalInputError, match=missing):  # from the header, as infer checks it before anything is read
        check_input(tmp_path / "scan.hdr", 2.0)
    with pytest.raises(MedicalInputError, match=missing):
        load_volume(tmp_path / "scan.hdr")
    (tmp_path / "scan.img.gz").write_bytes(b"\x1f\x8b")  # gzipped on its own: name it
    with pytest.raises(MedicalInputError, match=r"scan\.img\.gz is there: gzip or gunzip both files alike"):
        check_input(tmp_path / "scan.hdr", 2.0)
    (tmp_path / "scan.img").write_bytes(b"\0" * 1000)  # cut short
    with pytest.raises(MedicalInputError, match=r"scan\.img: truncated or damaged: .*\(16,000,000 bytes\), but the file holds 1,000 bytes"):
        check_input(tmp_path / "scan.hdr", 2.0)

    (tmp_path / "envi.hdr").write_text("ENVI\nsamples = 10\nlines = 10\nbands = 3\n")  # another format's .hdr: named, one line
    (tmp_path / "envi.img").write_bytes(b"\0" * 600)
    with pytest.raises(MedicalInputError, match=r"envi\.hdr: cannot be read as a NIfTI-pair/Analyze volume \(ImageFileError: [^\n]*\)$"):
        load_volume(tmp_path / "envi.hdr")


def _score_input(folder: Path) -> Path:
    folder.mkdir()
    data = _blob()
    nib.save(nib.AnalyzeImage(data, None), folder / "Doe_Jane.hdr")
    nib.save(nib.Nifti1Pair(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), folder / "pair.hdr")
    nib.save(nib.AnalyzeImage(data, None), folder / "lost.hdr")
    (folder / "lost.img").unlink()
    return folder


def test_score_takes_a_pair_as_one_item_keyed_by_its_voxel_file_too(tmp_path):
    from domains.medical.scoring import folder_entries

    inp = _score_input(tmp_path / "in")
    assert [p.name for p in folder_entries(inp)] == ["Doe_Jane.hdr", "lost.hdr", "pair.hdr"]  # each .img belongs to its header
    before, head = content_id(inp / "Doe_Jane.hdr"), (inp / "Doe_Jane.hdr").read_bytes()
    nib.save(nib.AnalyzeImage(_blob() * 2, None), inp / "Doe_Jane.hdr")  # new voxels ...
    assert (inp / "Doe_Jane.hdr").read_bytes() == head  # ... under the very same header bytes
    assert content_id(inp / "Doe_Jane.hdr") != before


@pytest.mark.slow  # the scorer imports the segmenter's module (torch, MONAI): ~20 s on the busy 2-core machine when run alone
def test_score_segments_a_pair_and_names_it_by_its_id_in_the_warning_and_the_quarantine(tmp_path, io_warnings):
    from core.scoring import WorkItem
    from domains.medical.scoring import SegmentationScorer, folder_entries, work_items

    inp = _score_input(tmp_path / "in")
    _, sources = work_items(folder_entries(inp))
    ids = {Path(p).name: vid for vid, p in sources.items()}
    scorer = SegmentationScorer("model-run", str(tmp_path / "masks"), sources=sources)
    scorer._seg = SimpleNamespace(class_names=["background", "object"],
                                  segment=lambda vol: SimpleNamespace(mask=(vol.data > 50).astype(np.uint8), mean_confidence=1.0))
    row = scorer.score(WorkItem(id=ids["Doe_Jane.hdr"])).iloc[0]
    assert row["format"] == "analyze" and row["mask_path"].endswith(f"{ids['Doe_Jane.hdr']}_mask.hdr")
    assert row["ml_object"] == pytest.approx(48 * 1e-3)  # 48 voxels of 1 mm^3
    assert io_warnings == [f"{ids['Doe_Jane.hdr']}: an Analyze 7.5 file stores no orientation; " + io_warnings[0].split("; ", 1)[1]]
    assert "Doe" not in io_warnings[0]  # the warning names the item's id, not the (identifying) file name
    assert scorer.score(WorkItem(id=ids["pair.hdr"])).iloc[0]["format"] == "nifti"
    with pytest.raises(MedicalInputError) as e:
        scorer.score(WorkItem(id=ids["lost.hdr"]))
    assert "missing — the voxel file of" in str(e.value) and "lost" not in str(e.value), str(e.value)


def test_evaluate_reads_an_analyze_task_and_checks_its_labels_grid_from_the_headers(tmp_path):
    from domains.medical.metrics import check_labelled_geometry, labelled_cases

    data = _blob()
    nib.save(nib.AnalyzeImage(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "case.hdr")
    nib.save(nib.AnalyzeImage((data > 50).astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "case_label.hdr")
    nib.save(nib.AnalyzeImage((data > 50).astype(np.uint8), np.diag([4.0, 4.0, 4.0, 1.0])), tmp_path / "coarse_label.hdr")
    case = {"image": str(tmp_path / "case.hdr"), "label": str(tmp_path / "case_label.hdr")}
    check_labelled_geometry([case])
    ((vid, vol, label),) = list(labelled_cases([case], num_classes=2))
    assert vid == "case" and vol.format == "analyze" and int(label.sum()) == 48
    with pytest.raises(MedicalInputError, match=r"coarse_label\.hdr"):  # from the headers, before a model or a run
        check_labelled_geometry([{**case, "label": str(tmp_path / "coarse_label.hdr")}])


def test_an_analyze_mask_keeps_the_scans_geometry_not_its_patient_fields(tmp_path):
    """The mask is written with the scan's own header (its geometry); the header's patient_id, exam date/time and free text
    were copied with it, into outputs that score names by content id so that no identifying name leaves the input."""
    hdr = nib.Spm2AnalyzeHeader()
    hdr.set_data_shape((14, 12, 10))
    hdr.set_zooms((2.0, 3.0, 4.0))
    hdr["origin"][:3] = [5, 6, 4]
    for key, value in {"patient_id": b"MRN123456", "exp_date": b"01-Mar-99", "exp_time": b"10:42", "scannum": b"S7",
                       "descrip": b"Doe^Jane T1 MPRAGE", "db_name": b"Doe_Jane", "aux_file": b"doe.txt"}.items():
        hdr[key] = value
    nib.save(nib.Spm2AnalyzeImage(_blob(), None, header=hdr), tmp_path / "scan.hdr")
    vol = load_volume(tmp_path / "scan.hdr")
    out = save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "scan_mask.nii.gz")
    written = (tmp_path / "scan_mask.hdr").read_bytes() + (tmp_path / "scan_mask.img").read_bytes()
    for value in (b"MRN123456", b"01-Mar-99", b"10:42", b"Doe", b"doe.txt"):
        assert value not in written, value
    mask = nib.load(out)
    assert np.allclose(mask.affine, nib.load(tmp_path / "scan.hdr").affine) and tuple(mask.header["origin"][:3]) == (5, 6, 4)
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), _blob() > 50)


@pytest.mark.parametrize("suffix, image_class", [(".nii", nib.Nifti1Image), (".hdr", nib.AnalyzeImage)])
def test_a_mask_does_not_keep_the_scans_display_window(tmp_path, suffix, image_class):
    """A scan's cal_min/cal_max (its display window, e.g. 10..2000) was copied into its mask with the header, so a viewer
    that honours it (FSLeyes, MRIcroGL, Mango) showed labels 1..N below the window: an empty-looking mask. Unset (0, 0) now."""
    img = image_class(_blob(), np.diag([2.0, 3.0, 4.0, 1.0]))
    img.header["cal_min"], img.header["cal_max"] = 10, 2000
    nib.save(img, tmp_path / f"scan{suffix}")
    vol = load_volume(tmp_path / f"scan{suffix}")
    mask = nib.load(save_mask_like((vol.data > 50).astype(np.uint8), vol, tmp_path / "scan_mask.nii.gz"))
    assert (float(mask.header["cal_min"]), float(mask.header["cal_max"])) == (0.0, 0.0)
    np.testing.assert_array_equal(np.asanyarray(mask.dataobj), _blob() > 50)

