"""Hostile scans the earlier passes did not cover (session 12): each is read correctly (asserted against the
plain 3D file) or refused in one ``MedicalInputError`` line naming the input and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

from domains.medical.validation import MedicalInputError

NAN3 = [np.nan] * 3


def _blob(shape=(20, 18, 12)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(100, 10, shape).astype(np.float32)


# ---- NRRD with a one-entry non-spatial axis --------------------------------------------------------
@pytest.mark.parametrize("layout", ["trailing", "leading", "spacings"])
def test_a_nrrd_with_a_one_entry_list_axis_keeps_its_geometry(tmp_path, layout):
    """A 3D NRRD written with a list/time axis of length 1 (Slicer and ITK write such files) was read with the
    identity affine — 1 mm voxels at the origin — because the data was not 3D when the geometry was built; the
    dimensionality check then dropped the singleton axis and the volume was segmented and its mask written in the
    wrong place. Now the axis is dropped first and the volume has exactly the plain 3D file's geometry."""
    import nrrd

    from domains.medical.io import check_input, load_volume

    data = _blob()
    dirs = np.array([[0.0, 3.5, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    plain = tmp_path / "plain.nrrd"
    nrrd.write(str(plain), data, {"space": "left-posterior-superior", "space directions": dirs, "space origin": [-80.0, 60.0, -40.0]})
    path = tmp_path / f"{layout}.nrrd"
    if layout == "trailing":
        nrrd.write(str(path), data[..., None], {"space": "left-posterior-superior", "space directions": np.array([*dirs, NAN3]),
                                                "space origin": [-80.0, 60.0, -40.0], "kinds": ["domain"] * 3 + ["list"]})
    elif layout == "leading":
        nrrd.write(str(path), data[None], {"space": "left-posterior-superior", "space directions": np.array([NAN3, *dirs]),
                                           "space origin": [-80.0, 60.0, -40.0], "kinds": ["list"] + ["domain"] * 3})
    else:  # no space directions: axis spacings only
        nrrd.write(str(plain), data, {"spacings": [2.0, 3.5, 4.0]})
        nrrd.write(str(path), data[..., None], {"spacings": [2.0, 3.5, 4.0, np.nan]})
    ref, vol = load_volume(plain), load_volume(path)
    np.testing.assert_array_equal(vol.data, ref.data)
    np.testing.assert_allclose(vol.affine, ref.affine)
    assert vol.spacing != (1.0, 1.0, 1.0)
    assert check_input(path, 3.0) == check_input(plain, 3.0)  # the header probe agrees with what is read


def test_a_nrrd_with_a_real_list_axis_is_still_refused_as_4d(tmp_path):
    import nrrd

    from domains.medical.io import load_volume

    path = tmp_path / "two.nrrd"
    nrrd.write(str(path), np.stack([_blob(), _blob()], -1), {"space": "RAS", "space directions": np.array([*np.eye(3), NAN3]),
                                                              "kinds": ["domain"] * 3 + ["list"]})
    with pytest.raises(MedicalInputError, match=r"two\.nrrd: expected a 3D volume, got 4D .*pick one volume"):
        load_volume(path)


# ---- NIfTI with a 5th axis of one component --------------------------------------------------------
def test_a_nifti_with_two_trailing_singleton_axes_is_read_as_the_3d_volume(tmp_path):
    """(x, y, z, 1, 1) is a scalar 3D volume (a time axis of one volume and a 5th axis of one component); only
    one trailing singleton axis was dropped, so it was refused as '5D data'. A 5th axis of 3 components is still
    refused."""
    import nibabel as nib

    from domains.medical.io import load_volume

    data, aff = _blob(), np.diag([2.0, 3.5, 4.0, 1.0])
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "plain.nii"))
    nib.save(nib.Nifti1Image(data[..., None, None], aff), str(tmp_path / "five.nii"))
    vol = load_volume(tmp_path / "five.nii")
    np.testing.assert_array_equal(vol.data, load_volume(tmp_path / "plain.nii").data)
    np.testing.assert_allclose(vol.affine, aff)
    nib.save(nib.Nifti1Image(np.stack([data] * 3, -1)[..., None, :], aff), str(tmp_path / "vector.nii"))
    with pytest.raises(MedicalInputError, match=r"vector\.nii: expected a 3D volume, got 5D data of shape \(20, 18, 12, 1, 3\)"):
        load_volume(tmp_path / "vector.nii")


# ---- file names ---------------------------------------------------------------------------------------
def _voxelwise_segmenter():
    """A 1x1x1-convolution 'network' (class 1 where the scaled intensity is above 0.5): real inference, no training."""
    import torch

    from domains.medical.config import PipelineConfig
    from domains.medical.predict import Segmenter

    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight[:] = torch.tensor([0.0, 20.0]).view(2, 1, 1, 1, 1)
        net.bias[:] = torch.tensor([0.0, -10.0])
    return Segmenter(net, PipelineConfig(modality="MRI", num_classes=2, spacing=3.0, patch=16, num_samples=1), ["background", "blob"], amp=False)


def _sphere_volume(shape=(24, 22, 20)) -> np.ndarray:
    inside = np.linalg.norm(np.indices(shape).T - np.array(shape) / 2, axis=-1).T < 7
    return (inside * 100.0 + 1.0).astype(np.float32)


@pytest.mark.parametrize("name, expected", [("new\nline.nii", "new_line"), ("tab\there\x1b[31m.nii", "tab_here_[31m"),
                                             ("with space ünï.nii", "with space ünï")])
def test_outputs_of_a_file_named_with_control_characters_are_named_without_them(tmp_path, name, expected):
    """infer names its outputs after the input file: a newline or an escape sequence in that name went into the
    mask/volumes/overlay file names, the volumes record and the log lines (split or recoloured). They become '_';
    spaces and non-ASCII letters stay."""
    import json

    import nibabel as nib

    from domains.medical.io import load_volume
    from domains.medical.predict import save_result

    src = tmp_path / name
    nib.save(nib.Nifti1Image(_sphere_volume(), np.diag([2.0, 2.0, 2.0, 1.0])), str(src))
    res = _voxelwise_segmenter().predict(load_volume(src))
    out = tmp_path / "out"
    out.mkdir()
    rec = save_result(res, out, "model")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{expected}_{k}" for k in ("mask.nii.gz", "volumes.json", "overlay.png"))
    assert rec["input"] == expected and json.loads((out / f"{expected}_volumes.json").read_text())["input"] == expected
    assert rec["volumes_ml"]["blob"] > 0


# ---- enhanced (multi-frame) DICOM ----------------------------------------------------------------------
def _write_multiframe(path, data: np.ndarray, spacing=(2.0, 2.0, 3.0), top_level_position: bool = False):
    """An Enhanced MR Image file: all slices as frames of one file, the geometry in functional group sequences."""
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4.1", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.SeriesInstanceUID, ds.SOPInstanceUID = "MR", generate_uid(), meta.MediaStorageSOPInstanceUID
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Rows, ds.Columns, ds.NumberOfFrames = data.shape[1], data.shape[0], data.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures, orient = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [spacing[1], spacing[0]], spacing[2]
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(data.shape[2]):
        fg, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [-20.0, -20.0, k * spacing[2]]
        fg.PlanePositionSequence = Sequence([pos])
        frames.append(fg)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    if top_level_position:  # some converters also copy the first frame's geometry to the top level
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [-20.0, -20.0, 0.0], [1, 0, 0, 0, 1, 0], [spacing[1], spacing[0]]
    ds.PixelData = np.ascontiguousarray(np.transpose(data, (2, 1, 0)).astype(np.int16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.mark.parametrize("top_level_position", [False, True])
def test_an_enhanced_multiframe_dicom_is_named_as_such(tmp_path, top_level_position):
    """A modern scanner's Enhanced MR export (the whole series as frames of one file) was refused as 'no DICOM image
    slices with geometry' — or, with the first frame's position copied to the top level, failed inside the reader
    stacking a 3D frame stack as one slice. Now: one line saying it is multi-frame and what to do, from the header
    check (infer) and from the reader (score, the dashboard's uploads), and for the file passed on its own."""
    from domains.medical.io import check_input, load_volume

    folder = tmp_path / "series"
    folder.mkdir()
    f = _write_multiframe(folder / "IM0001.dcm", (_blob((16, 14, 10)) * 10).astype(np.int16), top_level_position=top_level_position)
    for read in (lambda p: check_input(p, 3.0), load_volume):
        with pytest.raises(MedicalInputError, match=r"series: holds a multi-frame \(enhanced\) DICOM file \(10 frames in one file\).*dcm2niix"):
            read(folder)
    with pytest.raises(MedicalInputError, match=r"IM0001\.dcm: a multi-frame \(enhanced\) DICOM file \(10 frames in one file\)"):
        load_volume(f)


# ---- a broken sform beside a valid qform ----------------------------------------------------------------
@pytest.mark.parametrize("qform_code, expected", [
    (1, r"its sform \(sform_code 2\).* is singular or not finite, while its qform \(qform_code 1\) is a valid geometry.*fslorient"),
    (0, r"its sform \(sform_code 2\).* is singular or not finite; expected a voxel-to-world matrix with non-zero voxel sizes"),
])
def test_a_zero_sform_is_named_not_read_as_an_absurd_spacing(tmp_path, qform_code, expected):
    """A header whose sform code is set but whose sform matrix is zero (a tool that set the code and not the matrix)
    read as 'absurd voxel spacing (0, 0, 0) mm: check the units' — pointing at the wrong field. It now names the sform,
    and says when the qform beside it is valid (the header contradicts itself: which one is meant is the user's call)."""
    import nibabel as nib

    from domains.medical.io import check_input, load_volume

    img = nib.Nifti1Image(_blob(), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.set_qform(np.diag([2.0, 2.0, 3.0, 1.0]), code=qform_code)
    img.set_sform(np.zeros((4, 4)), code=2)
    path = tmp_path / "zero_sform.nii"
    nib.save(img, str(path))
    for read in (lambda q: check_input(q, 3.0), load_volume):
        with pytest.raises(MedicalInputError, match=r"zero_sform\.nii: " + expected):
            read(path)


# ---- handled correctly (asserted; no change needed) -------------------------------------------------------
def _world_ellipsoid(affine: np.ndarray, shape) -> np.ndarray:
    """Which voxels of a grid lie inside one fixed, off-centre ellipsoid in world (RAS mm) coordinates."""
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:]).T
    return ((((xyz - [8.0, -10.0, 12.0]) / [34.0, 26.0, 22.0]) ** 2).sum(1) < 1).reshape(shape)


@pytest.mark.parametrize("grid", ["sheared", "gantry tilt", "0.3 x 0.3 x 8 mm"])
def test_sheared_and_extremely_anisotropic_grids_are_segmented_in_place(grid):
    """A sheared affine (MONAI's Spacing resamples it onto an orthogonal 3 mm grid, and the mask comes back through the
    generic resampler) and a 0.3 x 0.3 x 8 mm grid: a voxel-wise network's mask on the input grid is the object where
    it is in the world (a misplaced mask would miss it)."""
    from domains.medical.io import Volume

    lin = {"sheared": [[2.0, 0.8, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.5]], "gantry tilt": [[2.0, 0.0, 0.0], [0.0, 2.0, 0.9], [0.0, 0.0, 2.5]],
           "0.3 x 0.3 x 8 mm": [[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 8.0]]}[grid]
    shape = (256, 200, 8) if grid.startswith("0.3") else (48, 44, 32)
    aff = np.eye(4)
    aff[:3, :3] = lin
    aff[:3, 3] = -(np.asarray(lin) @ (np.array(shape) / 2))
    truth = _world_ellipsoid(aff, shape)
    data = (truth * 100.0 + 1.0).astype(np.float32)
    mask = _voxelwise_segmenter().predict_volume(Volume(data=data, affine=aff, path=grid, format="nifti"))
    assert mask.shape == shape
    dice = 2 * ((mask > 0) & truth).sum() / ((mask > 0).sum() + truth.sum())
    assert truth.sum() > 1000 and dice > 0.95, dice


def test_nifti_scaling_and_voxel_types_are_read_as_the_values_they_mean(tmp_path):
    """scl_slope 0 means 'no scaling' (NIfTI-1), a set slope/intercept is applied; uint8, int32, float64 and bool voxels
    all arrive as the float32 values they hold."""
    import nibabel as nib

    from domains.medical.io import load_volume

    ints = (_blob() / 2).astype(np.int16)
    for name, slope, inter, expected in [("slope0", 0.0, 0.0, ints), ("scaled", 2.0, -5.0, ints * 2.0 - 5.0)]:
        img = nib.Nifti1Image(ints, np.diag([2.0, 2.0, 3.0, 1.0]))
        img.header["scl_slope"], img.header["scl_inter"] = slope, inter
        nib.save(img, str(tmp_path / f"{name}.nii"))
        np.testing.assert_array_equal(load_volume(tmp_path / f"{name}.nii").data, expected.astype(np.float32))
    for dtype in (np.uint8, np.int32, np.float64, bool):
        arr = (ints % 2).astype(dtype) if dtype is bool else ints.clip(0, 255).astype(dtype)
        nib.save(nib.Nifti1Image(arr.astype(np.uint8) if dtype is bool else arr, np.eye(4)), str(tmp_path / "t.nii"))
        vol = load_volume(tmp_path / "t.nii")
        assert vol.data.dtype == np.float32
        np.testing.assert_array_equal(vol.data, arr.astype(np.float32))


# ---- gantry-tilted DICOM ---------------------------------------------------------------------------------
def test_a_gantry_tilted_dicom_series_keeps_each_slice_where_the_scanner_put_it(tmp_path, dicom_writer):
    """A gantry-tilted head CT: axial slices (ImageOrientationPatient unchanged) whose positions move along y as well
    as z, slice by slice. The reader took only the step along the slice normal, so slice k was placed k x 1.1 mm off
    in y (here up to 12 mm; a 20 degree tilt over a head: centimetres) and masks were misregistered. The affine now
    holds the series' own step (a sheared grid): every voxel centre is where its slice's ImagePositionPatient says."""
    import pydicom

    from domains.medical.io import load_volume

    folder = dicom_writer(tmp_path / "tilted", (_blob((16, 14, 12)) * 5).astype(np.int16), spacing=(0.9, 0.9, 3.0), modality="CT")
    shift = 3.0 * np.tan(np.deg2rad(20))
    positions = {}
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(str(f))
        k = int(ds.InstanceNumber) - 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k * shift, z]
        positions[k] = np.array([x, y + k * shift, z])
        ds.save_as(str(f))
    vol = load_volume(folder)
    for k, lps in positions.items():
        ras = vol.affine @ np.array([0.0, 0.0, k, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
    assert vol.spacing[2] == pytest.approx(np.hypot(3.0, shift))
    # a slice off the line of the others (not a tilt: a stray slice of another series) is refused, not placed
    f = sorted(folder.iterdir())[5]
    ds = pydicom.dcmread(str(f))
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 7.0, *ds.ImagePositionPatient[1:]]
    ds.save_as(str(f))
    with pytest.raises(MedicalInputError, match=r"tilted: the DICOM slice positions do not lie on one line"):
        load_volume(folder)
