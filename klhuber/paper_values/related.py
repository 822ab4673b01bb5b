"""Values quoted by the sources of the related-losses chapters, beside Meyer (CVPR 2021):
lecture slides on regression losses (Smooth L1) and a blog review of Barron, "A General and
Adaptive Robust Loss Function" (CVPR 2019).

For side-by-side display ("paper" next to "measured") and tests only; never used as a result.
"""

from __future__ import annotations

import math

#: Lecture slides on regression losses: Smooth L1 and its parameterised form.
SMOOTH_L1 = {
    "default_beta": 1.0,  # smooth_L1(x) = 0.5 x^2 if |x| < 1 else |x| - 0.5
    "question": "Why 1? Can I use 2 or 5?",
    "pytorch_formula": "0.5 (x - y)^2 / beta if |x - y| < beta else |x - y| - 0.5 beta",
    "huber_formula": "0.5 (x - y)^2 if |x - y| < delta else delta (|x - y| - 0.5 delta)",
    "derivative_l1": "+1 if x >= 0 else -1",
    "derivative_l2": "2x (for L2 = x^2)",
    "derivative_smooth_l1": "x if |x| < 1 else ±1",
}

#: A blog review of Barron (CVPR 2019): special cases and the outlier demo.
BARRON = {
    "special_cases": {  # alpha -> name, as listed in the blog / reference implementation
        2.0: "L2",
        1.0: "Charbonnier / pseudo-Huber (L1-like)",
        0.0: "Cauchy / Lorentzian",
        -2.0: "Geman-McClure",
        -math.inf: "Welsch / Leclerc",
    },
    "alpha1_derivative_saturation": "1/c",  # 'the derivative's magnitude saturates to ... 1/c'
    "monotone_in_alpha": True,  # 'The loss is also monotonically increasing with increasing α'
    "demo": {
        "slope": 0.7,
        "shift": 0.15,
        "noise_sigma": 0.025,
        "outlier_fraction": 0.1,
        "optimizer": "Adam",
        "lr": 0.01,
        "epochs": 2000,
        "general_alpha": 2.0,  # fixed alpha of the blog's general-loss fit (L2)
        "general_scale": 0.1,
        "adaptive_alpha_range": (0.001, 1.999),  # AdaptiveLossFunction defaults
        "n_points_reference_notebook": 50,  # robust_loss_pytorch example.ipynb; the blog omits n
        "adaptive_result": "close to the true line, negligibly affected by the outliers",
    },
    "partition_closed_forms": {0.0: "pi * sqrt(2)", 2.0: "sqrt(2 pi)"},
}
