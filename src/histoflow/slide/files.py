"""Which files are slides: the suffixes histoflow's readers open, and folders expanded to them."""

from __future__ import annotations

from pathlib import Path

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
    ".png",
    ".jpg",
    ".jpeg",
)


def expand_slides(items) -> list[Path]:
    """Files as given (missing ones too: they get a failure report); folders expand to slide files."""
    out = []
    for p in map(Path, items):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.name.lower().endswith(SLIDE_SUFFIXES))
        else:
            out.append(p)
    return out
