"""Segmentation tasks in the Medical Segmentation Decathlon (MSD) layout, built from real offline
volumes, plus readers for any user MSD folder and the online MSD download.

Prepared tasks (``python -m core.data prepare medical``):

* ``msd-brain-aal`` (MRI, 4 foreground classes). Train: Colin27 single-subject T1 (skull-stripped
  ``ch2bet``) with the expert AAL atlas drawn on it. Held-out test: the MNI152 2009a symmetric T1
  template (nilearn) — a *different* real image — with the AAL labels carried over by nearest-
  neighbour resampling in MNI space. Classes: 1 left cerebral hemisphere, 2 right cerebral
  hemisphere, 3 cerebellum (hemispheres + vermis), 4 deep grey nuclei (caudate, putamen, pallidum,
  thalamus). Approximations (also in the dataset card): AAL labels only cortex/cerebellar grey
  matter, so classes 1–3 are filled into the adjacent white matter/CSF inside each image's brain
  mask by nearest-AAL-region assignment (brainstem voxels go to their nearest region); on MNI152 the
  labels are Colin27's atlas transferred by coordinates, not a tracing of MNI152 itself.
* ``msd-headct-bone`` (CT in Hounsfield units, 2 foreground classes). The InVesalius "Cranium"
  head CT (108×256×256, 0.957×0.957×1.5 mm). Labels are threshold masks, not expert tracings:
  1 soft tissue (−200..225 HU inside the head), 2 bone (≥ 226 HU, InVesalius' own bone mask range).
  The scan is split into a superior slab (training) and an inferior slab (held-out test) so that
  evaluation never sees training voxels. InVesalius stores no direction cosines: the volume is
  written axis-aligned (RAS) with its spacing — orientation is approximate.

Both come from Debian packages (``mricron-data``, ``invesalius-examples``) and are therefore
``optional``: without them the specs raise a clear error naming the ``apt-get`` command.

Layout of each prepared folder (MSD): ``dataset.json``, ``imagesTr/``, ``labelsTr/``,
``imagesTs/`` and — an extension of MSD, which ships no test labels — ``labelsTs/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data import DatasetSpec, SourceMissingError, debian_package_files, ensure_dataset, safe_extract_tar
from core.io import atomic_path, atomic_write_json
from core.locking import FolderLock
from core.logging import get_logger
from domains.medical.validation import MedicalInputError

__all__ = [
    "DATASETS",
    "MsdTask",
    "read_msd_task",
    "download_msd_task",
    "MSD_TASK_URLS",
    "task_dir",
    "BRAIN_TASK",
    "CT_TASK",
    "BRAIN_CLASSES",
    "CT_CLASSES",
    "read_task_meta",
    "check_task_fits_model",
    "read_synthesis",
]

log = get_logger("medical.data")

BRAIN_TASK = "msd-brain-aal"
CT_TASK = "msd-headct-bone"
BRAIN_CLASSES = ["background", "cerebrum_left", "cerebrum_right", "cerebellum", "deep_grey_nuclei"]
CT_CLASSES = ["background", "soft_tissue", "bone"]

MRICRON = Path("/usr/share/mricron/templates")
INVESALIUS = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
# The public MSD archives (AWS mirror used by monai.apps.DecathlonDataset).
MSD_TASK_URLS = {
    f"Task{n:02d}_{t}": f"https://msd-for-monai.s3-us-west-2.amazonaws.com/Task{n:02d}_{t}.tar"
    for n, t in [(1, "BrainTumour"), (2, "Heart"), (3, "Liver"), (4, "Hippocampus"), (5, "Prostate"), (6, "Lung"),
                 (7, "Pancreas"), (8, "HepaticVessel"), (9, "Spleen"), (10, "Colon")]
}


# ---------------------------------------------------------------------------------------------
# Reading any MSD-layout folder
# ---------------------------------------------------------------------------------------------


@dataclass
class MsdTask:
    """A parsed MSD ``dataset.json`` with absolute paths."""

    root: Path
    name: str
    modality: str  # "CT" or "MRI" (first channel)
    class_names: list[str]
    training: list[dict[str, str]] = field(default_factory=list)  # {"image", "label"}
    test: list[dict[str, str | None]] = field(default_factory=list)  # {"image", "label" or None}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def cases(self) -> list[dict]:
        out = [{"id": _case_id(c["image"]), "split": "train", **c} for c in self.training]
        out += [{"id": _case_id(c["image"]), "split": "test", **c} for c in self.test]
        return out


def _case_id(p: str) -> str:
    from domains.medical.io import volume_id

    return volume_id(p)


def _modality(raw: dict) -> str:
    m = raw.get("modality", {})
    first = str(m.get("0", m.get(0, "")) if isinstance(m, dict) else m).upper()
    return "CT" if "CT" in first else "MRI"


def read_msd_task(root: str | Path) -> MsdTask:
    """Read an MSD folder (e.g. an unpacked ``Task09_Spleen``) or one of our prepared tasks.

    Checks that ``dataset.json`` exists, names labels, and that every listed file is present."""
    root = Path(root)
    js = root / "dataset.json"
    if not js.is_file():
        raise MedicalInputError(f"{root}: not an MSD task folder (no dataset.json; expected imagesTr/, labelsTr/ and dataset.json)")
    try:
        raw = json.loads(js.read_text(encoding="utf-8-sig"))  # -sig: editors on Windows write a byte-order mark
    except UnicodeDecodeError as e:
        raise MedicalInputError(f"{js}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except json.JSONDecodeError as e:
        raise MedicalInputError(f"{js}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise MedicalInputError(f"{js}: expected a JSON object with 'labels', 'training' and 'test', got a {type(raw).__name__}")
    labels = raw.get("labels")
    example = '{"0": "background", "1": "spleen"}'
    if not isinstance(labels, dict) or not labels:
        raise MedicalInputError(f"{js}: 'labels' must map class ids to names, e.g. {example}")
    try:
        ids = sorted(int(k) for k in labels)
    except ValueError:
        raise MedicalInputError(f"{js}: 'labels' keys must be class ids (0, 1, ...), got {sorted(map(str, labels))[:5]}; "
                                f"expected e.g. {example}") from None
    if ids != list(range(len(ids))):
        raise MedicalInputError(f"{js}: label ids {ids} must be 0..{len(ids) - 1}")
    names = [str(labels.get(str(i), labels.get(i))) for i in ids]

    def resolve(p: str | None) -> str | None:
        if p is None:
            return None
        q = (root / p).resolve()
        if not q.exists():
            raise MedicalInputError(f"{js}: lists {p} but {q} does not exist")
        return str(q)

    for key in ("training", "test"):
        if not isinstance(raw.get(key, []), list):
            raise MedicalInputError(f"{js}: '{key}' must be a list of cases, got a {type(raw[key]).__name__}")
    training = []
    for c in raw.get("training", []):
        if not isinstance(c, dict) or not isinstance(c.get("image"), str) or not isinstance(c.get("label"), str):
            raise MedicalInputError(f"{js}: each 'training' entry needs 'image' and 'label' paths")
        training.append({"image": resolve(c["image"]), "label": resolve(c["label"])})
    test = []
    for c in raw.get("test", []):
        if isinstance(c, str):
            img = c
            lab = None
        elif isinstance(c, dict) and isinstance(c.get("image"), str):
            img, lab = c["image"], c.get("label")
        else:
            raise MedicalInputError(f"{js}: each 'test' entry must be an image path or an object with 'image' (and optionally 'label'), got {c!r:.80}")
        if lab is None:  # our extension: labelsTs/<same name> when present
            cand = root / "labelsTs" / Path(img).name
            lab = str(cand.relative_to(root)) if cand.is_file() else None
        test.append({"image": resolve(img), "label": resolve(lab)})
    if not training and not test:
        raise MedicalInputError(f"{js}: lists no training or test cases")
    return MsdTask(root=root, name=str(raw.get("name", root.name)), modality=_modality(raw), class_names=names, training=training, test=test)


def check_task_fits_model(task: MsdTask, meta: dict) -> None:
    """A model measured on another task must see that task's modality and the same number of classes:
    otherwise its Dice is reported under its own class names against labels that mean something else
    (a brain MRI model "scoring" a spleen CT task). Differing class names with the same count are only
    logged: the ids are what is compared."""
    model_classes = [str(c) for c in meta.get("class_names", [])]
    model_modality = str(meta.get("modality", task.modality)).upper()
    if model_classes and len(task.class_names) != len(model_classes):
        raise MedicalInputError(f"task {task.root}: {len(task.class_names)} classes {task.class_names}, but the model segments "
                                f"{len(model_classes)} {model_classes}; evaluate it on a task with the same labels")
    if task.modality.upper() != model_modality:
        raise MedicalInputError(f"task {task.root}: modality {task.modality}, but the model was trained on {model_modality} "
                                "(different intensity preprocessing); evaluate it on a task of its own modality")
    if model_classes and list(task.class_names) != model_classes:
        log.warning(f"task {task.root}: class names {task.class_names} differ from the model's {model_classes}; compared by class id")


def read_task_meta(run_dir: str | Path) -> dict:
    """``task.json`` of a trained run (task, class names, pipeline, model spec), with a clear error for a
    folder that is not one."""
    run_dir = Path(run_dir)
    if not all((run_dir / f).is_file() for f in ("task.json", "config.json", "best.safetensors")):
        raise MedicalInputError(f"{run_dir}: not a trained medical run (needs task.json, config.json and best.safetensors; "
                                "train with `python -m domains.medical.train`)")
    path = run_dir / "task.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MedicalInputError(f"{path}: damaged run file ({type(e).__name__}: {e}); retrain or restore the run folder") from None
    need = {"class_names": list, "pipeline": dict, "model": dict}
    wrong = [k for k, t in need.items() if not isinstance(meta, dict) or not isinstance(meta.get(k), t)] if isinstance(meta, dict) else list(need)
    if wrong:
        raise MedicalInputError(f"{path}: damaged run file ({', '.join(wrong)} missing or of the wrong type); retrain or restore the run folder")
    return meta


def download_msd_task(task: str, root: str | Path, url: str | None = None, md5: str | None = None, progress: bool = True) -> Path:
    """Download and unpack an MSD task archive (``Task09_Spleen`` …) into ``root`` — online only.

    ``url`` overrides the public mirror (e.g. an institutional copy); already-unpacked tasks are
    reused. Returns the task folder (which :func:`read_msd_task` reads)."""
    root = Path(root)
    out = root / task
    if (out / "dataset.json").is_file():
        return out
    if url is None:
        if task not in MSD_TASK_URLS:
            raise MedicalInputError(f"unknown MSD task {task!r}; known: {', '.join(MSD_TASK_URLS)} (or pass url=)")
        url = MSD_TASK_URLS[task]
    root.mkdir(parents=True, exist_ok=True)
    # one download per task folder: a second process waits for the first and reuses its folder (two at once
    # removed each other's unpacked files: "archive has no dataset.json", or a FileExistsError / ENOTEMPTY traceback)
    with FolderLock.wait(root / f".{task}.lock", on_wait=lambda pid: log.info(f"MSD task {task} is being downloaded into {root} by another "
                                                                              f"process (PID {pid}); waiting for it")):
        if not (out / "dataset.json").is_file():
            _download_and_unpack(task, url, md5, root, out)
    read_msd_task(out)  # validate
    return out


def _download_and_unpack(task: str, url: str, md5: str | None, root: Path, out: Path) -> None:
    """Download the archive and move its task folder to ``out``; the caller holds the task's lock."""
    import urllib.request

    archive = root / f".{task}.tar"
    try:
        with atomic_path(archive) as tmp:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as fh:  # noqa: S310 - user-chosen URL
                shutil.copyfileobj(r, fh, length=1 << 20)
    except OSError as e:
        raise MedicalInputError(f"cannot download MSD task {task} from {url}: {e}. Offline? Unpack the archive yourself and pass its folder.") from None
    if md5:
        import hashlib

        got = hashlib.md5(archive.read_bytes()).hexdigest()  # noqa: S324 - MSD publishes md5
        if got != md5:
            archive.unlink()
            raise MedicalInputError(f"{url}: md5 {got} differs from the expected {md5}")
    staging = root / f".{task}.unpack"
    shutil.rmtree(staging, ignore_errors=True)
    safe_extract_tar(archive, staging)  # refuses absolute paths / links outside the folder (also on Python < 3.11.4)
    inner = next((p.parent for p in staging.rglob("dataset.json")), None)
    if inner is None:
        raise MedicalInputError(f"{url}: archive has no dataset.json; not an MSD task")
    os.replace(inner, out)
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Building the offline tasks
# ---------------------------------------------------------------------------------------------


def _mni152_t1() -> Path:
    try:
        import nilearn
    except ImportError as e:  # pragma: no cover
        raise SourceMissingError("nilearn is not installed: `pip install nilearn` (ships the MNI152 template)") from e
    return Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def _locate_brain() -> dict[str, Path]:
    # the system install, else a no-root fetch of the Debian package into the data cache
    src = debian_package_files("mricron-data", [str(MRICRON / n) for n in ("ch2.nii.gz", "ch2bet.nii.gz", "aal.nii.gz", "aal.nii.txt")])
    mni = _mni152_t1()
    if not mni.is_file():
        raise SourceMissingError(f"{mni} not found: `pip install nilearn` (0.14 ships the MNI152 2009a template)")
    src["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"] = mni
    return src


def _aal_groups(txt: Path) -> dict[int, int]:
    """AAL region id → our class (1 left cerebrum, 2 right cerebrum, 3 cerebellum, 4 deep grey)."""
    deep = ("Caudate", "Putamen", "Pallidum", "Thalamus")
    out = {}
    for line in txt.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        rid, name = int(parts[0]), parts[1]
        if name.startswith(("Cerebelum", "Vermis")):
            out[rid] = 3
        elif name.startswith(deep):
            out[rid] = 4
        elif name.endswith("_L"):
            out[rid] = 1
        elif name.endswith("_R"):
            out[rid] = 2
    return out


def _fill_labels(groups: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Classes 1–3 filled into the brain mask by nearest labelled voxel; deep grey kept as drawn."""
    from scipy import ndimage

    lobar = np.where(np.isin(groups, (1, 2, 3)), groups, 0)
    _, idx = ndimage.distance_transform_edt(lobar == 0, return_indices=True)
    filled = lobar[tuple(idx)]
    out = np.where(brain, filled, 0).astype(np.uint8)
    out[groups == 4] = 4
    out[~brain] = 0
    return out


def _brain_mask(t1: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    m = t1 > 0
    m = ndimage.binary_closing(m, iterations=2)
    m = ndimage.binary_fill_holes(m)
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    return m


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _write_dataset_json(out: Path, name: str, description: str, modality: str, classes: list[str],
                        training: list[str], test: list[str], extra: dict) -> None:
    atomic_write_json(out / "dataset.json", {
        "name": name, "description": description, "reference": extra.pop("reference", ""), "licence": extra.pop("licence", ""),
        "tensorImageSize": "3D", "modality": {"0": modality}, "labels": {str(i): n for i, n in enumerate(classes)},
        "numTraining": len(training), "numTest": len(test),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in training],
        "test": [{"image": f"./imagesTs/{c}.nii.gz", "label": f"./labelsTs/{c}.nii.gz"} for c in test],
        **extra,
    })


def _build_brain(src: dict[str, Path], out: Path) -> None:
    import nibabel as nib

    groups_of = _aal_groups(src["aal.nii.txt"])
    lut = np.zeros(256, dtype=np.uint8)
    for rid, g in groups_of.items():
        lut[rid] = g
    ch2 = nib.load(str(src["ch2bet.nii.gz"]))
    aal = nib.load(str(src["aal.nii.gz"]))
    if not np.allclose(ch2.affine, aal.affine):
        raise ValueError("ch2bet and aal grids differ; unexpected mricron-data release")
    t1 = np.asarray(ch2.dataobj).astype(np.float32)
    aal_ids = np.asarray(aal.dataobj).astype(np.uint8)
    lab = _fill_labels(lut[aal_ids], _brain_mask(t1))
    _save_nifti(t1, ch2.affine, out / "imagesTr" / "colin27.nii.gz")
    _save_nifti(lab, ch2.affine, out / "labelsTr" / "colin27.nii.gz")
    synthesis = _build_whole_head(src, lab, ch2.affine, out)

    mni = nib.load(str(src["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]))
    mt1 = np.asarray(mni.dataobj).astype(np.float32)
    # nearest-neighbour transfer of the AAL ids: MNI152 voxel -> world (MNI mm) -> Colin27 voxel
    ijk = np.indices(mt1.shape).reshape(3, -1)
    world = mni.affine[:3, :3] @ ijk + mni.affine[:3, 3:4]
    inv = np.linalg.inv(aal.affine)
    src_ijk = np.rint(inv[:3, :3] @ world + inv[:3, 3:4]).astype(np.int64)
    inside = np.all((src_ijk >= 0) & (src_ijk < np.array(aal_ids.shape)[:, None]), axis=0)
    carried = np.zeros(ijk.shape[1], dtype=np.uint8)
    carried[inside] = aal_ids[tuple(src_ijk[:, inside])]
    carried = carried.reshape(mt1.shape)
    mlab = _fill_labels(lut[carried], _brain_mask(mt1))
    _save_nifti(mt1, mni.affine, out / "imagesTs" / "mni152.nii.gz")
    _save_nifti(mlab, mni.affine, out / "labelsTs" / "mni152.nii.gz")
    _write_dataset_json(out, "BrainAAL", "Colin27 T1 (train) and MNI152 2009a T1 (held-out test) with AAL regions grouped into "
                        "4 classes; test labels carried over from Colin27 by nearest-neighbour resampling in MNI space.",
                        "MRI", BRAIN_CLASSES, ["colin27"], ["mni152"],
                        {"reference": "Holmes 1998 (Colin27); Tzourio-Mazoyer 2002 (AAL); Fonov 2011 (MNI152 2009a)",
                         "licence": "see datasets/msd-brain-aal/README.md", "synthesis": synthesis})


def _build_whole_head(src: dict[str, Path], lab: np.ndarray, affine: np.ndarray, out: Path) -> dict:
    """``synthesis/``: Colin27 T1 **with** skull and its whole-head generation label map
    (``domains.medical.synth.build_generation_labels``: the 4 classes split into CSF/grey/white
    matter + 3 non-brain head tissues); returns the ``dataset.json`` entry (relative paths)."""
    import nibabel as nib

    from domains.medical.synth import GENERATION_CLASSES, GENERATION_TO_LABEL, build_generation_labels

    head = nib.load(str(src["ch2.nii.gz"]))
    if not np.allclose(head.affine, affine):
        raise ValueError("ch2 and aal grids differ; unexpected mricron-data release")
    t1 = np.asarray(head.dataobj).astype(np.float32)
    _save_nifti(t1, affine, out / "synthesis" / "colin27_head.nii.gz")
    _save_nifti(build_generation_labels(t1, lab), affine, out / "synthesis" / "colin27_generation_labels.nii.gz")
    return {"head": "./synthesis/colin27_head.nii.gz", "brain": "./imagesTr/colin27.nii.gz",
            "generation_labels": "./synthesis/colin27_generation_labels.nii.gz", "generation_classes": GENERATION_CLASSES,
            "generation_to_label": GENERATION_TO_LABEL}


def read_synthesis(root: str | Path) -> dict | None:
    """The ``synthesis`` entry of a task's ``dataset.json`` with absolute paths (``head``, ``brain``,
    ``generation_labels``), or None when the task has none (every task but ``msd-brain-aal``)."""
    root = Path(root)
    js = root / "dataset.json"
    entry = json.loads(js.read_text()).get("synthesis") if js.is_file() else None
    if not entry:
        return None
    out = dict(entry)
    for k in ("head", "brain", "generation_labels"):
        p = (root / entry[k]).resolve()
        if not p.is_file():
            raise MedicalInputError(f"{js}: synthesis lists {entry[k]} but {p} does not exist")
        out[k] = p
    return out


def _locate_ct() -> dict[str, Path]:
    return debian_package_files("invesalius-examples", [str(INVESALIUS)])


def read_invesalius_ct(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU volume in x,y,z order, bone mask from InVesalius' mask_0, affine) from an ``.inv3`` project."""
    import plistlib

    with tarfile.open(path) as tf:
        members = {Path(m.name).name: m for m in tf.getmembers() if m.isfile()}
        main = plistlib.loads(tf.extractfile(members["main.plist"]).read())
        shape = tuple(main["matrix"]["shape"])  # (z, y, x)
        hu = np.frombuffer(tf.extractfile(members[main["matrix"]["filename"]]).read(), dtype=main["matrix"]["dtype"]).reshape(shape)
        mplist = plistlib.loads(tf.extractfile(members["mask_0.plist"]).read())
        mshape = tuple(mplist["mask_shape"])
        mraw = np.frombuffer(tf.extractfile(members[mplist["mask_file"]]).read(), dtype=np.uint8).reshape(mshape)
    mask = mraw[1:, 1:, 1:] > 127  # InVesalius pads the mask by one voxel on each axis
    sx, sy, sz = (float(s) for s in main["spacing"])
    hu_xyz = np.ascontiguousarray(np.transpose(hu, (2, 1, 0))).astype(np.int16)
    mask_xyz = np.ascontiguousarray(np.transpose(mask, (2, 1, 0)))
    affine = np.diag([sx, sy, sz, 1.0])
    return hu_xyz, mask_xyz, affine


def ct_labels(hu: np.ndarray) -> np.ndarray:
    """1 soft tissue (−200..225 HU, the head only), 2 bone (≥ 226 HU)."""
    from scipy import ndimage

    body = hu > -200
    lab, n = ndimage.label(body)
    if n > 1:
        sizes = ndimage.sum(body, lab, range(1, n + 1))
        body = lab == (1 + int(np.argmax(sizes)))  # drop the table and cables
    body = ndimage.binary_fill_holes(body)
    out = np.zeros(hu.shape, dtype=np.uint8)
    out[body & (hu < 226)] = 1
    out[body & (hu >= 226)] = 2
    return out


def _build_ct(src: dict[str, Path], out: Path) -> None:
    hu, bone_mask, affine = read_invesalius_ct(src["Cranium.inv3"])
    lab = ct_labels(hu)
    agree = float(((lab == 2) == bone_mask).mean())
    if agree < 0.98:
        raise ValueError(f"bone threshold disagrees with InVesalius' own bone mask on {1 - agree:.1%} of voxels")
    nz = hu.shape[2]
    cut = nz // 2
    for name, sl, folder in (("headct_superior", slice(cut, nz), "Tr"), ("headct_inferior", slice(0, cut), "Ts")):
        aff = affine.copy()
        aff[:3, 3] = affine[:3, :3] @ np.array([0, 0, sl.start])
        _save_nifti(hu[:, :, sl], aff, out / f"images{folder}" / f"{name}.nii.gz")
        _save_nifti(lab[:, :, sl], aff, out / f"labels{folder}" / f"{name}.nii.gz")
    _write_dataset_json(out, "HeadCTBone", "InVesalius 'Cranium' head CT in HU; threshold labels (soft tissue, bone); superior slab "
                        "for training, inferior slab held out.", "CT", CT_CLASSES, ["headct_superior"], ["headct_inferior"],
                        {"reference": "InVesalius sample data (CTI Renato Archer), Debian invesalius-examples",
                         "licence": "see datasets/msd-headct-bone/README.md", "bone_mask_agreement": round(agree, 5)})


DATASETS: list[DatasetSpec] = [
    DatasetSpec(name=BRAIN_TASK, domain="medical", description="MRI: Colin27 T1 + AAL (4 classes) train, MNI152 held-out (MSD layout)",
                locate=_locate_brain, build=_build_brain, version="2", optional=True, tags=["mri", "segmentation", "msd"]),
    DatasetSpec(name=CT_TASK, domain="medical", description="CT: InVesalius head CT in HU, soft tissue + bone (MSD layout)",
                locate=_locate_ct, build=_build_ct, version="1", optional=True, tags=["ct", "segmentation", "msd"]),
]
_SPECS = {s.name: s for s in DATASETS}


def task_dir(name_or_path: str) -> Path:
    """A prepared task by name (prepared on first use) or any MSD folder path."""
    if name_or_path in _SPECS:
        return ensure_dataset(_SPECS[name_or_path])
    p = Path(name_or_path)
    if (p / "dataset.json").is_file():
        return p
    raise MedicalInputError(f"unknown task {name_or_path!r}: expected {', '.join(_SPECS)} or an MSD folder with dataset.json")
