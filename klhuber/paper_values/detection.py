"""Tables 3-6 of Meyer (CVPR 2021), as printed, for side-by-side display and tests only.

Nothing in the library reads these values to compute anything; the ``detectors`` chapter
shows them in a "paper" column group next to the numbers measured by
:mod:`klhuber.detection.experiments`.  Values are COCO mAP in percent at IoU 0.5, at IoU 0.75
and averaged over 0.5-0.95 (COCO's AP), in that order (AP50, AP75, AP), keyed by the presets of
:mod:`klhuber.interpret`. Tables 3 and 4 are in the main text of Meyer (CVPR 2021); Tables 5
and 6 in its Appendices D and E.
"""

from __future__ import annotations

__all__ = ["SETUPS", "TABLE3", "TABLE4", "TABLE5", "TABLE6", "TABLES"]

#: Table 3, "Faster R-CNN Performance" (VGG-16, COCO 2014 train -> val).  ``baseline`` is the
#: row "Baseline [18]" (the Faster R-CNN paper's own number; AP75 not reported: ``None``).
TABLE3: dict[str, tuple[float | None, float | None, float | None]] = {
    "baseline": (41.5, None, 21.2),
    "publication": (42.8, 18.7, 21.0),
    "implementation": (44.7, 23.1, 23.8),
    "experiment_a": (44.7, 24.0, 24.2),
    "experiment_b": (44.2, 25.0, 24.6),
    "experiment_c": (44.6, 24.9, 24.7),
}

#: Table 4, "RetinaNet Performance" (ResNet-101, COCO 2017 train -> val).
TABLE4: dict[str, tuple[float, float, float]] = {
    "implementation": (60.1, 42.9, 40.4),
    "experiment_a": (60.6, 43.5, 40.8),
    "experiment_b": (58.9, 42.3, 39.8),
}

#: Table 5, "Target Performance" (Appendix D): "Original" = log targets (the Implementation
#: row of Table 3), "Approximation" = linear targets t_w = w/w_a - 1 (``appendix_d`` preset).
TABLE5: dict[str, tuple[float, float, float]] = {
    "implementation": (44.7, 23.1, 23.8),
    "appendix_d": (44.6, 23.0, 23.7),
}

#: Table 6, "Loss Function Performance" (Appendix E): H_alpha (the Implementation row of
#: Table 3) vs D_{alpha/2, 1/alpha} (``appendix_e`` preset).
TABLE6: dict[str, tuple[float, float, float]] = {
    "implementation": (44.7, 23.1, 23.8),
    "appendix_e": (44.7, 23.3, 23.8),
}

#: The paper's experimental set-up of each table (for labelling the "paper" columns).
SETUPS: dict[str, dict[str, str]] = {
    "table3": {"arch": "Faster R-CNN", "backbone": "VGG-16 (ImageNet-pretrained)",
               "data": "MS-COCO 2014 train / val", "schedule": "py-faster-rcnn defaults",
               "row_labels": "Baseline [18], Publication, Implementation, Experiment A-C"},
    "table4": {"arch": "RetinaNet", "backbone": "ResNet-101-FPN (ImageNet-pretrained)",
               "data": "MS-COCO 2017 train / val", "schedule": "Detectron defaults",
               "row_labels": "Implementation, Experiment A, Experiment B"},
    "table5": {"arch": "Faster R-CNN", "backbone": "VGG-16", "data": "MS-COCO 2014",
               "schedule": "as Table 3", "row_labels": "Original, Approximation"},
    "table6": {"arch": "Faster R-CNN", "backbone": "VGG-16", "data": "MS-COCO 2014",
               "schedule": "as Table 3", "row_labels": "H_alpha, D_{alpha/2,1/alpha}"},
}

#: All four tables by key.
TABLES: dict[str, dict[str, tuple]] = {
    "table3": TABLE3, "table4": TABLE4, "table5": TABLE5, "table6": TABLE6,
}
