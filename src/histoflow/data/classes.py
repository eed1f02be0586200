"""Which class of a binary task is the positive one.

Every binary figure (sensitivity, PPV, operating points, ROC, the Grad-CAM gallery's "true
positive", a slide heatmap) is about one class. Binary models have one logit, for class index 1,
so the positive class is placed second in the class order (`positive_class_order`) and the
checkpoint records its name.

`data.positive_class` names it. Without it, histoflow accepts only names that say which is
positive (0/1, negative/positive, benign/malignant, normal/tumour...): sorting alone would make
`normal` the positive class of `metastasis`/`normal`, a silent wrong answer.
"""

from __future__ import annotations

import re

from histoflow.core.errors import ConfigError

# compared after lower-casing and dropping spaces, '-' and '_' ("Non-Tumour" -> "nontumour")
NEGATIVE_NAMES = frozenset(
    {
        "0",
        "neg",
        "negative",
        "benign",
        "normal",
        "healthy",
        "nontumour",
        "nontumor",
        "nontumoral",
        "nonmetastatic",
        "nocancer",
        "noncancer",
        "nonidc",
        "no",
        "false",
        "absent",
        "control",
        "background",
    }
)
POSITIVE_NAMES = frozenset(
    {
        "1",
        "pos",
        "positive",
        "malignant",
        "tumour",
        "tumor",
        "tumoral",
        "metastasis",
        "metastases",
        "metastatic",
        "cancer",
        "carcinoma",
        "idc",
        "invasive",
        "lesion",
        "yes",
        "true",
        "present",
        "abnormal",
        "atypical",
    }
)


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def guess_positive_class(class_names: list[str]) -> str | None:
    """The positive one of two class names when the names say it, else None."""
    if len(class_names) != 2:
        return None
    neg = [n for n in class_names if _key(n) in NEGATIVE_NAMES]
    pos = [n for n in class_names if _key(n) in POSITIVE_NAMES]
    if len(neg) == 1 and len(pos) == 1 and neg != pos:
        return pos[0]
    if len(neg) == 1 and not pos:  # normal vs anything else: the other one
        return next(n for n in class_names if n != neg[0])
    if len(pos) == 1 and not neg:  # tumour vs anything else: tumour
        return pos[0]
    return None


def positive_class_order(class_names: list[str], positive_class: str | None = None, source: str = "data") -> list[str]:
    """`class_names` with the positive class second (binary tasks); other tasks unchanged.

    Raises ConfigError when `positive_class` is not a class, or when a binary task's names do
    not say which class is positive and `positive_class` is not given.
    """
    names = list(class_names)
    if positive_class is not None and str(positive_class) not in names:
        raise ConfigError(f"data.positive_class: {positive_class!r} is not one of the classes {names} of {source}")
    if len(names) != 2:
        if positive_class is not None:
            raise ConfigError(
                f"data.positive_class: {source} has {len(names)} classes {names}; a positive class "
                f"is defined for binary tasks only (remove data.positive_class)"
            )
        return names
    positive = str(positive_class) if positive_class is not None else guess_positive_class(names)
    if positive is None:
        raise ConfigError(
            f"{source}: the class names {names} do not say which one is positive (the class "
            f"sensitivity, PPV and the ROC curve are about); set data.positive_class to "
            f"{names[0]!r} or {names[1]!r}, e.g. --set data.positive_class={names[1]}"
        )
    return [n for n in names if n != positive] + [positive]


def positive_class_of(class_names: list[str]) -> str | None:
    """The positive class of a class order made by `positive_class_order`: the second of two."""
    return str(class_names[1]) if len(class_names) == 2 else None
