"""Matplotlib figures for every paper figure; each function takes arrays and a path to a PNG.

Figures are written with the non-interactive Agg backend so they render on headless machines.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

# ------------------------------------------------------------ Evaluation: Fig. 3, Fig. 4, Fig. A.1–A.2

# -------------------------------------------------------------------- Analyses: Fig. 5 and Fig. 6
