"""Medical: segment a prepared case or an uploaded scan with a trained run, look at it in three
planes with the mask overlaid, read per-structure volumes and the Dice against a label."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from dashboards import slices
from dashboards.common import friendly_errors, md_code, md_text, open_domain_page, page_header, run_path, train_command
from dashboards.uploads import MAX_EXTRACTED_MB, MAX_FILES, MAX_UPLOAD_MB, UploadError, check_upload, materialise, session_uploads

page_header("Medical", "3D segmentation of CT/MRI volumes: choose a prepared case or upload a scan, run the model, inspect the mask.")


def import_api():
    from domains.medical import api
    return api


api, run_dir, run_k = open_domain_page("medical", import_api, prefer=lambda api, p: api.model_run(p).has_model)  # the newest run holding a model
if not api.model_run(run_dir).has_model:  # e.g. a run stopped before its first checkpoint, or its model file deleted
    st.warning(f"Run {md_text(run_dir.name)} holds no trained model (`best.safetensors` is missing). Choose another run in the "
               "sidebar, or train one with:")
    st.code(train_command("medical"), language="bash")
    st.stop()


@st.cache_resource(show_spinner="Loading the segmentation model…", max_entries=2)
def segmenter(key: str) -> api.LoadedSegmenter:
    """``key``: the run's :func:`run_key` + ``#<lcc><tta>`` (the post-processing switches)."""
    base, switches = key.rsplit("#", 1)
    return api.load_segmenter(run_path(base), lcc=switches[0] == "1", tta=switches[1] == "1")


@st.cache_resource(show_spinner="Checking the scan…", max_entries=2)
def checked_scan(run: str, source: str) -> api.CheckedScan | str:
    """The uploaded scan read once and checked as ``infer`` checks it before loading the model (a blank image,
    another modality, 4D or NaN voxels, a grid too large) — or why it is refused; reads the run's task.json, not
    its weights. The segmentation takes these voxels (:func:`segment`'s ``_scan``): the file is read once."""
    try:
        return api.check_scan(run_path(run), source)
    except api.MedicalInputError as e:
        return str(e)


@st.cache_resource(show_spinner="Segmenting…", max_entries=6)
def segment(key: str, source: str, _scan: api.CheckedScan | None = None) -> api.Segmentation:
    """Inference result per (run, input); a case seen once answers instantly afterwards. ``_scan``: the voxels
    :func:`checked_scan` already read from ``source`` (not part of the cache key)."""
    return segmenter(key).predict(source if _scan is None else _scan)


@st.cache_data(show_spinner=False, ttl=60)
def cases() -> list[api.Case]:
    return api.list_cases()


@st.cache_resource(show_spinner=False, max_entries=6)
def label_volume(path: str) -> np.ndarray:
    return np.asarray(api.load_label(path))


def upload_refused(e: Exception | str, folder: Path, upload: str = "the uploaded scan") -> str:
    """A refusal of an uploaded file in one line. The medical code names the file it read, here a file in the
    session's private folder the user never saw: that path reads as ``upload`` ("the uploaded scan", "the uploaded label")."""
    return "Upload refused: " + md_text(re.sub(re.escape(str(folder)) + r"[^\s:]*", upload, str(e)))


class SeveralSeries(Exception):
    """A DICOM upload holding several series, each written as its own NIfTI (``series``: id, description, path or the
    refusal of that series) before the raw files were deleted: the user chooses one."""

    def __init__(self, series: list[dict]):
        super().__init__(f"{len(series)} DICOM series")
        self.series = series


def split_dicom_series(raw: Path, out: Path) -> None:
    """``materialise``'s DICOM reader: one series as before (``out``); several (a localizer beside the axial series) each
    read as ``infer --series`` reads it into a NIfTI beside ``out`` while the raw files still exist (they are deleted
    right after, as for one series) — raises :class:`SeveralSeries` listing them for the page to choose from; a series of
    several images at each position (multi-echo, dynamic) is listed as its volumes, each read as ``infer --volume``. Each file's
    header is parsed once (:class:`api.DicomFolder`): the plain read, the listing and every series' conversion share it (each
    used to read the whole folder again: N + 2 parses of every file for N series)."""
    folder = api.DicomFolder(raw)
    try:
        folder.to_nifti(out)
        return
    except api.MedicalInputError:
        found = folder.series()
        # each series, or each volume of a series holding several images at every position (multi-echo, dynamic: infer --volume)
        choices = [(s, k, n) for s in found for n in [folder.volume_count(s.id)] for k in (range(n) if n else [None])]
        if len(choices) <= 1:
            raise
    listed = []
    with st.spinner(f"Reading the {len(choices)} DICOM volumes of the upload (the raw files are deleted after)…"):
        for s, k, n in choices:
            entry = {"id": s.id if k is None else f"{s.id}-volume-{k}", "path": None, "refused": None,
                     "description": s.description if k is None else f"{s.description}: volume {k} of 0..{n - 1}"}
            try:
                entry["path"] = str(folder.to_nifti(out.parent / f"{entry['id']}.nii.gz", series=s.id, volume=k).path)
                Path(entry["path"]).chmod(0o600)
            except api.MedicalInputError as e:  # that series alone is refused (shown when it is chosen); the others stay usable
                entry["refused"] = str(e)
            listed.append(entry)
    raise SeveralSeries(listed)


def read_label_dicom(raw: Path, out: Path) -> None:
    """``materialise``'s DICOM reader for the label: one series, read as the scan's. A ZIP of several was refused in the
    reader's words for the command line ("pick one with --series ... (infer)"); here it says what to upload instead, the
    series named as the scan's selectbox names them (technical tags only, no patient field), from the headers the read
    parsed (:class:`api.DicomFolder`: each file once)."""
    folder = api.DicomFolder(raw)
    try:
        folder.to_nifti(out)
    except api.MedicalInputError:
        found = folder.series()
        if len(found) <= 1:
            raise
        listed = "; ".join(s.description for s in found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise api.MedicalInputError(f"{raw} holds {len(found)} DICOM series ({listed}); a label is one volume: upload a ZIP of its "
                                    "series alone") from None


def choose_within(upload_id: str, materialised) -> tuple[str | None, str]:
    """The file to segment from an upload, and its name on the page: the upload itself, or — for a DICOM ZIP of several
    series or a 4D NIfTI — the series or volume the user picks in a selectbox (None until then). ``materialised()`` writes
    the upload into the session's folder; a multi-series ZIP's listing is kept in the session's state, so a rerun does
    not extract and read it again."""
    known = st.session_state.setdefault("med_upload_series", {})
    series = known.get(upload_id)
    if series is None or not all(e["path"] is None or Path(e["path"]).is_file() for e in series):
        try:
            path = materialised()
        except SeveralSeries as several:
            known[upload_id] = series = several.series
        else:
            known.pop(upload_id, None)
            series = None
    if series is not None:
        names = {e["description"]: e for e in series}  # "series-<hash> (N slice(s) of RxC, CT LOCALIZER, SeriesNumber S)"
        what = "volumes (series, echoes or time points)" if any("-volume-" in e["id"] for e in series) else "series"
        pick = st.selectbox(f"The ZIP holds {len(series)} DICOM {what}: which one to segment?", list(names), index=None,
                            placeholder="Choose a series…", key=f"med_series_{upload_id}",
                            help="as `infer --series series-<hash>` (and `--volume N` within a multi-echo or dynamic series) picks "
                                 "one: slices, size, Modality, LOCALIZER and SeriesNumber from the headers (no patient field, no series "
                                 "description)")
        if pick is None:
            st.info(f"The ZIP holds {len(series)} DICOM {what}; choose the one to segment above (a localizer is a few survey slices).")
            return None, "upload"
        chosen = names[pick]
        if chosen["refused"] is not None:
            raise api.MedicalInputError(chosen["refused"])
        return chosen["path"], f"upload-{chosen['id']}"
    count = api.volume_count(path)
    if count is None:
        return str(path), "upload"
    pick = st.selectbox(f"The scan holds {count} volumes along its 4th (or list/time) axis (time points, or channels such as an MSD image's "
                        "modalities): which one to segment?", list(range(count)), index=None, format_func=lambda k: f"volume {k} of 0..{count - 1}",
                        placeholder="Choose a volume…", key=f"med_volume_{upload_id}", help="as `infer --volume N` picks one (0-based)")
    if pick is None:
        st.info(f"The scan is 4D ({count} volumes); choose the one to segment above.")
        return None, "upload"
    out = Path(path).with_name(f"volume-{int(pick)}.nii.gz")
    if not out.is_file():
        api.scan_volume_to_nifti(path, out, int(pick))
        out.chmod(0o600)
    return str(out), f"upload-volume-{int(pick)}"


with st.sidebar:
    st.subheader("Inference")
    lcc = st.toggle("Largest connected component", value=False, key="med_lcc",
                    help="keep only the largest connected piece of each structure (MONAI KeepLargestConnectedComponent)")
    tta = st.toggle("Test-time augmentation (mirror)", value=False, key="med_tta",
                    help="average with the left-right mirrored scan, lateral labels swapped; about twice the inference time")
key = f"{run_k}#{int(lcc)}{int(tta)}"  # one cached model and result per run and switch setting
source = st.radio("Input", ["Prepared case", "Upload a scan"], horizontal=True, key="med_source")
image_source: str | None = None
scan: api.CheckedScan | None = None  # an upload as read and checked: segmented without reading its file again
label_source: str | None = None
label_refused = False  # an uploaded label refused (one line shown where it was refused)
case_name = "upload"

if source == "Prepared case":
    with friendly_errors("Listing the prepared cases"):
        all_cases = cases()
        if not all_cases:
            st.info("No prepared case found. Prepare the data with `.venv/bin/python -m core.data prepare all`, or upload a scan.")
        else:
            task = api.model_run(run_dir).task
            all_cases = sorted(all_cases, key=lambda c: c.dataset != task)  # the run's own task first
            labels = {f"{c.id}  ({c.dataset}{', ' + c.split if c.split else ''}"
                      f"{', labelled' if c.label else ''}{'' if task is None or c.dataset == task else ', not the task this model learned'})": c
                      for c in all_cases}
            chosen = labels[st.selectbox("Case", list(labels), key="med_case")]
            image_source, label_source, case_name = chosen.image, chosen.label, chosen.id
else:
    up = st.file_uploader(f"Scan: NIfTI (.nii, .nii.gz), NRRD (.nrrd), DICOM (.dcm, or a .zip of one or more series: you pick one); at most {MAX_UPLOAD_MB} MB",
                          key="med_upload",
                          help=f"A ZIP may hold at most {MAX_FILES} files and {MAX_EXTRACTED_MB} MB decompressed. Uploads stay in a "
                               "private folder of this session, removed when the session ends; DICOM files are read at once and deleted.")
    up_label = st.file_uploader("Label volume on the same grid (optional, for Dice)", key="med_upload_label")
    if up is not None:
        try:
            store = session_uploads()
            data = up.getvalue()
            suffix = check_upload(up.name, data)
            image_source, case_name = choose_within(up.file_id, lambda: materialise(up.name, data, suffix, store, split_dicom_series))
        except UploadError as e:
            st.error(f"Upload refused: {e}")
            image_source = None
        except api.MedicalInputError as e:
            st.error(upload_refused(e, store.path))
            image_source = None
        if image_source is not None:
            checked = checked_scan(run_k, image_source)
            if isinstance(checked, str):
                st.error(upload_refused(checked, store.path))  # refused as `infer` refuses it: before the model is loaded
                image_source = None
            else:
                scan = checked
        if image_source is not None and up_label is not None:
            try:  # the label is optional: one refused is one line, and the scan is still segmented (no Dice)
                ldata = up_label.getvalue()
                label_source = str(materialise(up_label.name, ldata, check_upload(up_label.name, ldata), store, read_label_dicom, role="label"))
            except UploadError as e:
                st.error(f"Upload refused: {e}")
                label_refused = True
            except api.MedicalInputError as e:
                st.error(upload_refused(e, store.path, "the uploaded label"))
                label_refused = True
    else:
        st.caption("Drop a file above to segment it.")

if image_source is None:
    st.stop()

result = None
with friendly_errors(f"Segmenting {md_code(case_name)}"):
    segmenter(key)  # load (cached) before timing the inference itself
    try:
        result = segment(key, image_source, scan)
    except api.MedicalInputError as e:
        if source != "Upload a scan":
            raise
        # what the segmenter refuses in an upload (a blank image, a CT series given to an MRI model, intensities
        # beyond float32: the checks `infer` makes) is the upload's fault: one line, as the upload checks above
        st.error(upload_refused(e, store.path))
if result is None:
    st.stop()

image, mask, names = result.image, result.mask, list(result.class_names)
spacing = result.spacing  # along the displayed (canonical) axes

def class_name(c: int) -> str:
    return names[c] if c < len(names) else f"class {c}"


# ---- the label, when there is one (for Dice and the label / error overlays) ---------------------
label: np.ndarray | None = None
if label_source is not None:
    with friendly_errors("Reading the label"):
        try:
            label = label_volume(label_source)
        except api.MedicalInputError as e:
            if source != "Upload a scan":
                raise
            # what load_label refuses in an uploaded label (fractional values, another dimensionality, an unreadable
            # file) is the upload's fault: one line naming "the uploaded label", not the session's private path
            st.error(upload_refused(e, store.path, "the uploaded label"))
        if label is not None and label.shape != mask.shape:
            st.warning(f"The label's shape {label.shape} differs from the scan's {mask.shape}; it is not on the same grid, so no Dice.")
            label = None

# ---- viewer controls ---------------------------------------------------------------------------
ERRORS = {1: ("false positive (model only)", "#ff2d2d"), 2: ("false negative (missed)", "#2d7dff"), 3: ("wrong structure", "#ffd400")}
with st.sidebar:
    st.subheader("Viewer")
    modes = ["Model mask"] + (["Label", "Errors vs label"] if label is not None else [])
    mode = st.radio("Overlay", modes, key="med_overlay", help="compare the model's mask with the label when there is one")
    opacity = st.slider("Mask opacity", 0.0, 1.0, 0.45, 0.05, key="med_opacity")
    explain = st.selectbox("Explain a structure", ["—", *names[1:]], key="med_explain",
                           help="occlusion sensitivity (MONAI) on a patch around the structure: red where hiding the image "
                                "lowers the model's belief in it, blue where it raises it; seconds on a CPU")


@st.cache_resource(show_spinner="Explaining (occlusion sensitivity)…", max_entries=4)
def saliency(k: str, source: str, structure: str, _scan: api.CheckedScan | None = None) -> api.StructureSaliency:
    return api.structure_saliency(segmenter(k), source if _scan is None else _scan, structure)


sal: api.StructureSaliency | None = None
if explain != "—":
    with friendly_errors(f"Explaining {explain}"):
        sal = saliency(key, image_source, explain, scan)


@st.cache_data(show_spinner=False, max_entries=4)
def error_mask(k: str, source: str, label_path: str) -> np.ndarray:
    m, lab = segment(k, source).mask, label_volume(label_path)
    out = np.zeros(m.shape, np.uint8)
    out[(m > 0) & (lab == 0)] = 1
    out[(m == 0) & (lab > 0)] = 2
    out[(m > 0) & (lab > 0) & (m != lab)] = 3
    return out


def overlay_mask(k: str, source: str, label_path: str | None, mode: str) -> np.ndarray:
    """The volume drawn over the scan in ``mode``: the model's mask, the label or the errors against it."""
    if mode == "Errors vs label":
        return error_mask(k, source, label_path)
    return segment(k, source).mask if mode == "Model mask" else label_volume(label_path)


@st.cache_data(show_spinner=False, max_entries=16)
def classes_present(k: str, source: str, label_path: str | None, mode: str) -> list[int]:
    """The non-zero classes of the overlay, counted once per input and mode, not on every slider move."""
    counts = np.bincount(overlay_mask(k, source, label_path, mode).ravel().astype(np.int64))
    return [int(c) for c in np.flatnonzero(counts) if c != 0]


shown_mask = overlay_mask(key, image_source, label_source, mode)
present = classes_present(key, image_source, label_source, mode)
if mode == "Errors vs label":
    legend_names = {c: n for c, (n, _) in ERRORS.items()}
    default_colours = {c: col for c, (_, col) in ERRORS.items()}
else:
    legend_names = {c: class_name(c) for c in range(1, max(len(names), max(present, default=0) + 1))}
    pal = slices.palette(max(legend_names, default=0) + 1)
    default_colours = {c: pal[c] for c in legend_names}
with st.sidebar:
    show = st.multiselect("Structures shown", [legend_names[c] for c in present], default=[legend_names[c] for c in present],
                          key=f"med_show_{mode}")
    colours: dict[int, str] = {}
    with st.expander("Colours", expanded=False):
        for c in present:
            colours[c] = st.color_picker(md_text(legend_names[c]), default_colours[c], key=f"med_colour_{mode}_{c}")
visible = {c for c in present if legend_names[c] in show}



@st.cache_data(show_spinner=False, max_entries=8)
def view_start(k: str, source: str) -> tuple[tuple[int, int, int], tuple[float, float]]:
    """First slices (centre of the segmented structures) and the intensity window, once per input."""
    r = segment(k, source)
    return slices.foreground_centre(r.mask), slices.window(r.image)


centre, win = view_start(key, image_source)
heat_scale = 1.0
if sal is not None:
    finite = sal.map[np.isfinite(sal.map)]
    heat_scale = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
    centre = tuple(int((b.start + b.stop) // 2) for b in sal.box)  # open the viewer on the explained patch
    st.caption(f"Explaining **{md_text(sal.structure)}**: {sal.method}; its mean probability over its voxels in the patch is {sal.score:.2f}. "
               "Red: hiding that region lowers the model's belief in the structure; blue: raises it. Outside the patch: not computed.")
if result.ood is not None and result.ood.flagged:  # issue 14.5: never a 3.8 L "brain" without a word
    conf = f" Mean confidence {result.ood.mean_confidence:.2f}." if result.ood.mean_confidence is not None else ""
    st.warning("**Out of distribution — do not trust this segmentation.** " + "; ".join(result.ood.reasons or ("flagged by the model's guard",))
               + "." + conf, icon=":material/report:")
elif result.ood is not None:
    conf = f" (mean confidence {result.ood.mean_confidence:.2f})" if result.ood.mean_confidence is not None else ""
    st.caption(f"Out-of-distribution guard: structure volumes and confidence are within the expected ranges{conf}.")
st.subheader(f"Slices of {md_code(case_name)} · shape {tuple(image.shape)} · spacing {tuple(round(s, 2) for s in spacing)} mm")
cols = st.columns(3)
for col, plane in zip(cols, slices.PLANES):
    axis = slices.AXIS[plane]
    with col:
        idx = st.slider(f"{plane.capitalize()} slice", 0, image.shape[axis] - 1, int(centre[axis]), key=f"med_{plane}")
        rgb = slices.overlay(slices.take(image, plane, idx), slices.take(shown_mask, plane, idx), colours, opacity, win, visible)
        if sal is not None:
            rgb = slices.heat(rgb, slices.take(sal.map, plane, idx), 0.7, heat_scale)
        st.image(slices.to_display(rgb, slices.plane_spacing(spacing, plane)), caption=f"{plane} {idx + 1}/{image.shape[axis]}")

legend = " ".join(
    f"<span style='display:inline-block;margin:2px 12px 2px 0'><span style='display:inline-block;width:12px;height:12px;"
    f"background:{html.escape(colours[c])};border-radius:2px;margin-right:5px;vertical-align:middle'></span>{html.escape(legend_names[c])}</span>"
    for c in present if c in visible)
if legend:
    st.markdown(f"<div>{html.escape(mode)}: {legend}</div>", unsafe_allow_html=True)  # label names come from a user's dataset.json
else:
    st.caption("Nothing to overlay: the mask is empty." if mode != "Errors vs label" else "The model's mask matches the label exactly.")

@st.cache_data(show_spinner=False, max_entries=8)
def dice_of(k: str, source: str, label_path: str) -> dict:
    return api.dice_per_class(segment(k, source).mask, label_volume(label_path), names)


@st.cache_data(show_spinner=False, max_entries=8)
def label_volumes(label_path: str, spacing: tuple[float, ...], class_names: tuple[str, ...]) -> dict[str, float]:
    return api.volumes_ml(label_volume(label_path), spacing, list(class_names))


# ---- numbers -----------------------------------------------------------------------------------
left, right = st.columns(2)
with left:
    st.subheader("Volumes")
    vols = pd.DataFrame({"structure": list(result.volumes_ml), "volume (mL)": [float(v) for v in result.volumes_ml.values()]})
    if label is not None:  # the label's volume of each structure beside the model's, computed as the model's are
        label_ml = label_volumes(label_source, spacing, tuple(names))
        vols["label volume (mL)"] = [label_ml.get(n, np.nan) for n in vols["structure"]]
    st.dataframe(vols, hide_index=True, width="stretch")
with right:
    st.subheader("Dice against the label")
    if label is None:
        st.caption("No label for this input, so no Dice." if label_source is None and not label_refused else "The label could not be used (see above).")
    else:
        with friendly_errors("Computing Dice"):
            dice = dice_of(key, image_source, label_source)
            dice_df = pd.DataFrame({"structure": list(dice), "Dice": [float(v) for v in dice.values()]})
            st.dataframe(dice_df, hide_index=True, width="stretch")
            st.metric("Mean Dice", f"{np.nanmean(dice_df['Dice']):.3f}")


@st.cache_data(show_spinner=False, max_entries=4)
def mask_bytes(k: str, source: str) -> bytes:
    return segment(k, source).to_nifti_bytes()


with friendly_errors("Preparing the mask download"):
    st.download_button("Download mask (NIfTI)", data=mask_bytes(key, image_source), file_name=f"{re.sub(r'[^A-Za-z0-9._-]+', '_', case_name)}_mask.nii.gz",
                       mime="application/gzip", key="med_download")
