"""What the paper states about its toy problem (Section 5, Figure 2), for display and tests only.

Never used as a computed result: the book shows these next to the values that
:mod:`klhuber.toy` measures.  The paper prints no numbers for Figure 2 (no slopes, no axis
values in the text), so only the set-up and the qualitative claim are recorded.
"""

from __future__ import annotations

#: The experimental set-up of Section 5, as stated.
SETUP = {
    "n_train": 10_000,  # "we sample N = 10000 points"
    "delta": 2.0,  # x uniform in [-delta, delta]
    "theta_star": (6.0, -3.0, -25.0, 15.0, 20.0, -10.0),  # leading coefficient first
    "polynomial": "F(x) = 6x^5 - 3x^4 - 25x^3 + 15x^2 + 20x - 10",
    "D": 6,
    "K": 8,  # "we set K = D + 2"
    "families": ("laplace", "logistic", "cauchy"),
    "loss": "sum of the Huber loss H_alpha over the training examples",
    "optimizer": "gradient descent",
    "selection": "grid search over the learning rate and alpha",
    "score": "RMSE over a noise-free test set",
}

#: The claim of Section 5 about Figure 2 (quoted).
CLAIM_FIG2 = (
    "there is a near linear relationship between the scale of the label noise and the optimal "
    "alpha parameter for each of the distributions"
)
