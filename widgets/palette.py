"""Okabe-Ito colours: distinguishable with the common colour-vision deficiencies (and in greyscale print)."""

from __future__ import annotations

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

# Mask layers of the review view (settings may override them).
OKABE_ITO_LAYERS: dict[str, str] = {
    "teacher": OKABE_ITO["blue"],
    "student": OKABE_ITO["orange"],
    "gt": OKABE_ITO["bluish_green"],
    "corrected": OKABE_ITO["reddish_purple"],
}

LAYER_TITLES = {"teacher": "teacher", "student": "student", "gt": "ground truth", "corrected": "corrected"}
