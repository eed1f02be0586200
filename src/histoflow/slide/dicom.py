"""DICOM whole-slide images (VL Whole Slide Microscopy): a folder of instances is one slide.

A DICOM slide is a series of instance files (one per pyramid level, plus label, overview and
thumbnail instances), usually named by UID, so users pass the folder. OpenSlide 4 reads the
series through any one of its image instances (it finds the others in the same folder) and
gives level dimensions, mpp and the label/macro/thumbnail images, with the same pixels as
wsidicom (measured on CMU-1-Small-Region: identical); no extra dependency is needed.

The reader's path is what the user gave (the folder), so the slide id is the folder name and
a reader reopens from it; the instance handed to OpenSlide is an implementation detail.
"""

from __future__ import annotations

from pathlib import Path

from histoflow.core.errors import SlideReadError
from histoflow.slide.openslide import OpenSlideSlide, _openslide, openslide_format

PREAMBLE_BYTES = 128  # a DICOM Part 10 file: 128-byte preamble, then b"DICM"
MAGIC = b"DICM"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
NO_LEVELS = "No pyramid levels found"  # OpenSlide, opening a series through a label-only view


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (the 'DICM' marker after the preamble), whatever its name."""
    try:
        with open(path, "rb") as fh:
            fh.seek(PREAMBLE_BYTES)
            return fh.read(4) == MAGIC
    except OSError:
        return False


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:  # permissions, a vanished network share: name the folder
        raise SlideReadError(f"{folder}: cannot list the folder ({exc})") from exc


def _may_be_dicom(path: Path) -> bool:
    """Names DICOM files have: `.dcm`, none (`IM0001`), or a UID (`1.2.826...419`, a numeric suffix)."""
    suffix = path.suffix.lower()
    return suffix in (".dcm", "") or suffix[1:].isdigit()


def is_dicom_series(folder: Path) -> bool:
    """A folder that holds DICOM instances itself: one slide, not a folder of slides.
    Looks only at files named like DICOM files and stops at the first one found, so a folder
    of thousands of PNG patches or slide files costs a directory listing, not a read per file."""
    try:
        files = [p for p in folder.iterdir() if _may_be_dicom(p) and p.is_file()]
    except OSError:
        return False
    files.sort(key=lambda p: p.suffix.lower() != ".dcm")
    return any(is_dicom_file(p) for p in files)


def series_instance(folder: Path, one_series_given: bool = False) -> Path:
    """The instance OpenSlide opens a folder's series through, after opening each instance once.

    OpenSlide opens a series through any image instance and silently skips the files it cannot
    parse: a truncated level-0 file would leave a pyramid one level short (wrong dimensions and
    mpp) or, beside a label, only "No pyramid levels found". Opening every instance on its own
    (about a millisecond each) finds the damaged file and names it instead, and a folder
    holding more than one series (unless an instance was given, choosing one) is refused.
    """
    entries = _listing(folder)
    files = [p for p in entries if p.is_file()]
    instances = [p for p in files if is_dicom_file(p)]
    if not instances:
        series = [p.name for p in entries if p.is_dir() and is_dicom_series(p)]
        if series:
            raise SlideReadError(
                f"{folder}: holds no DICOM instances itself but {len(series)} DICOM series folder(s) "
                f"({', '.join(series[:3])}{', ...' if len(series) > 3 else ''}): pass one of them, or give this "
                "folder to `histoflow tile`/`predict-slide`, which take each series folder as one slide"
            )
        if not files:
            raise SlideReadError(f"{folder}: empty folder: no slide file or DICOM instance (.dcm) in it")
        raise SlideReadError(
            f"{folder}: a folder, but none of its {len(files)} file(s) is a DICOM instance (no 'DICM' marker "
            f"at byte 128, e.g. {files[0].name}); pass a slide file, or a folder of DICOM WSI instances"
        )
    wsi = [p for p in instances if openslide_format(p) == "dicom"]
    if not wsi:
        raise SlideReadError(
            f"{folder}: none of its {len(instances)} DICOM file(s) is a whole-slide microscopy image "
            f"OpenSlide can read (e.g. {instances[0].name}); expected VL Whole Slide Microscopy Image "
            f"instances (SOP class {WSI_SOP_CLASS}), or the files are truncated"
        )
    openslide = _openslide()
    opened, failed = [], []
    series_of: dict[str | None, Path] = {}  # series UID -> its first instance
    for p in wsi:
        try:
            with openslide.OpenSlide(str(p)) as one:
                series_of.setdefault(one.properties.get("dicom.SeriesInstanceUID"), p)
            opened.append(p)
        except openslide.OpenSlideError as exc:
            if NO_LEVELS not in str(exc):  # a label/overview instance whose series lacks its levels
                failed.append(f"{p.name}: {_explain(exc)}")
    if failed:
        raise SlideReadError(f"{folder}: a DICOM instance of this slide cannot be read ({'; '.join(failed[:3])})")
    if len(series_of) > 1 and not one_series_given:
        # OpenSlide would read whichever series the chosen instance belongs to: never pick silently
        examples = " and ".join(p.name for p in list(series_of.values())[:2])
        raise SlideReadError(
            f"{folder}: holds {len(series_of)} DICOM series (e.g. {examples} belong to different ones); a folder "
            "is one slide: put each series in its own folder, or pass one instance file of the series wanted"
        )
    if not opened:
        raise SlideReadError(
            f"{folder}: the DICOM series has no image pyramid instance (only label, overview or thumbnail "
            "instances); copy the folder again with all its files"
        )
    return max(opened, key=lambda p: (p.stat().st_size, p.name))


def _explain(exc: BaseException) -> str:
    msg = str(exc)
    if "end of filehandle" in msg:
        return f"{msg}: a DICOM file of this slide looks truncated (copy it again)"
    return msg


class DicomSlide(OpenSlideSlide):
    """A DICOM WSI series, given as its folder or as one instance file, read by OpenSlide."""

    def __init__(self, path: str | Path, mpp_override: float | None = None, **kwargs):
        p = Path(path)
        instance = series_instance(p) if p.is_dir() else p
        if not is_dicom_file(instance):
            raise SlideReadError(f"{instance}: not a DICOM file (no 'DICM' marker at byte 128)")
        if openslide_format(instance) != "dicom":
            raise SlideReadError(
                f"{instance}: a DICOM file, but not a whole-slide image OpenSlide can read: expected a VL Whole "
                f"Slide Microscopy Image instance (SOP class {WSI_SOP_CLASS}); "
                "the file may also be truncated"
            )
        if not p.is_dir():
            # the series is the folder's: name a damaged sibling, as for the folder
            series_instance(p.parent, one_series_given=True)
        self.instance = instance
        try:
            super().__init__(p, mpp_override=mpp_override, **kwargs)
        except SlideReadError as exc:
            raise SlideReadError(
                f"{p}: cannot open the DICOM series through {instance.name} ({_explain(exc.__cause__ or exc)})"
            ) from exc

    def _openslide_path(self, path: Path) -> str:
        return str(self.instance)

    def openslide_region(self, x: int, y: int, level: int, w: int, h: int):
        try:
            return super().openslide_region(x, y, level, w, h)
        except SlideReadError as exc:
            raise SlideReadError(_explain(exc)) from exc.__cause__
