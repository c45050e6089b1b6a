"""An uploaded LABEL that is a ZIP of several DICOM series was refused on the medical page in the reader's words for the
command line — "pick one with --series series-<hash> or --series <SeriesNumber> (infer)" — which names no control of the
page. The page says what to upload instead (one line, the series named by technical tags only), and the scan uploader's
prompt says a ZIP may hold several series (the page lets the user pick one). Slow: a page run on a tiny trained model."""

from __future__ import annotations

import io
import zipfile

import nibabel as nib
import numpy as np
import pytest
from tests.dashboards.test_medical_upload_choose import PATIENT, _dicom_series, _gz, brain, page  # noqa: F401 - the shared page fixtures

pytestmark = pytest.mark.slow


def test_a_label_zip_of_two_series_is_refused_in_the_pages_words(page, brain):  # noqa: F811 - pytest fixtures
    t1, aff = brain
    assert "one or more series" in page.file_uploader(key="med_upload").label
    page.file_uploader(key="med_upload").upload("scan.nii.gz", _gz(nib.Nifti1Image(t1, aff)), "application/gzip")
    lab = np.zeros(t1.shape, dtype=np.int16)
    lab[10:20, 10:20, 10:20] = 1
    entries = {**_dicom_series(lab, 2, ["ORIGINAL", "PRIMARY", "AXIAL"], (-90.0, -126.0, -72.0), "AX"),
               **_dicom_series(lab[:, :, 20:23], 1, ["ORIGINAL", "PRIMARY", "LOCALIZER"], (-90.0, -126.0, 8.0), "LOC")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    page.file_uploader(key="med_upload_label").upload("label.zip", buf.getvalue(), "application/zip")
    page.run()
    assert not page.exception, [e.message for e in page.exception]
    (error,) = [e.value.replace("\\", "") for e in page.error]
    assert error.startswith("Upload refused: the uploaded label holds 2 DICOM series (series-"), error
    assert "LOCALIZER" in error and error.endswith("a label is one volume: upload a ZIP of its series alone"), error
    assert "--series" not in error and "infer" not in error and "\n" not in error, error
    assert PATIENT.split("^")[0] not in error and "MRN" not in error, error
