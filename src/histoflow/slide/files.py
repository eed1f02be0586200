"""Which files are slides: the suffixes histoflow's readers open, and folders expanded to them.

A folder that holds DICOM instances is one slide (a DICOM series), not a folder of files; a
folder of such series folders gives one slide per series.
"""

from __future__ import annotations

from pathlib import Path

from histoflow.core.errors import SlideReadError
from histoflow.slide.dicom import is_dicom_series

SLIDE_SUFFIXES = (
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".tif",
    ".tiff",
    ".btf",
    ".svslide",
    ".vsi",  # listed so a folder's .vsi files get a failure report saying why, not silence
    ".png",
    ".jpg",
    ".jpeg",
)
# suffixes that only whole-slide files carry (a .tif, .png or .jpg may as well be a plain image);
# DICOM WSI instances (.dcm) come as series folders, listed here for single files
WHOLE_SLIDE_ONLY_SUFFIXES = tuple(s for s in SLIDE_SUFFIXES if s not in (".tif", ".tiff", ".png", ".jpg", ".jpeg")) + (
    ".dcm",
)


def expand_slides(items) -> list[Path]:
    """Files as given (missing ones too: they get a failure report); folders expand to slide files
    and DICOM series folders (each one slide); a folder that is a DICOM series stays whole."""
    out = []
    for p in map(Path, items):
        if p.is_dir() and not is_dicom_series(p):
            for q in sorted(p.iterdir()):
                if q.is_file() and q.name.lower().endswith(SLIDE_SUFFIXES):
                    out.append(q)
                elif q.is_dir() and is_dicom_series(q):
                    out.append(q)
        else:
            out.append(p)
    return out


def check_companions(path: Path) -> None:
    """Refuse slide formats whose pixels live in a folder beside the file when that folder is
    missing: the file alone opens as something else (a VSI's overview) or fails vaguely."""
    suffix = path.suffix.lower()
    if suffix == ".vsi":
        ets = path.with_name(f"_{path.stem}_")
        if not ets.is_dir():
            raise SlideReadError(
                f"{path}: an Olympus/Evident VSI file holds only a small overview; the slide's pixels live in "
                f"the folder {ets.name}/ (stack*/frame_t.ets) beside it, which is missing. Copy that folder "
                "with the .vsi file"
            )
        raise SlideReadError(
            f"{path}: Olympus/Evident VSI (.ets) pyramids are not readable by histoflow's backends; convert the "
            "slide to OME-TIFF (e.g. `bfconvert` or QuPath) and use that file"
        )
    if suffix == ".mrxs":
        data = path.with_suffix("")
        if not (data / "Slidedat.ini").is_file():
            raise SlideReadError(
                f"{path}: a MIRAX (3DHISTECH) slide keeps its pixels in the folder {data.name}/ (Slidedat.ini, "
                "Data*.dat) beside the .mrxs file, which is missing or has no Slidedat.ini. Copy that folder "
                "with the .mrxs file"
            )
