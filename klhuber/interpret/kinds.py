r"""The box-loss kinds: one registry of each kind's function, α domain and label factor.

A *kind* is the per-coordinate (or per-box) loss a stage applies to its residual
:math:`r = t - \tilde t^*`.  Its entry here is the one place that says

* how to evaluate it (``fn(pred, target, params)``, where ``params`` has float ``lam`` and
  ``alpha``; the detectors pass a :class:`klhuber.detection.box_losses.BoxRegressionLoss`);
* which α it accepts (``alpha_domain``);
* the label-noise scale it assumes, in units of :math:`\sigma_c s_c` (``label_per_alpha``
  times α: α for ``huber``/``smooth_l1``, α/2 for ``kl``, 0 for ``l1``; ``None`` where the
  loss has no Laplace reading, as HIoU);
* what the Table 2 reading relies on (``approximation``).

:class:`klhuber.interpret.StageLoss`, :func:`klhuber.interpret.interpret` and the detectors'
box losses all read this registry, so a kind is declared once.

**α = 0 for** ``smooth_l1``.  torch's ``smooth_l1_loss(beta=0)`` is L1, so ``smooth_l1``
accepts α = 0 (as torch and detectron2 do) and then reads as label noise 0 (exact, like
``l1``).  ``huber`` and ``kl`` divide by α and need α > 0; ``l1`` stores α = 0 (the limit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "ALPHA_DOMAINS",
    "BUILTIN_KINDS",
    "LossKind",
    "loss_kind",
    "loss_kinds",
    "register_loss_kind",
]

#: Values of :attr:`LossKind.alpha_domain`: α > 0, α >= 0, α = 0, α in [0, 1].
ALPHA_DOMAINS: tuple[str, ...] = ("positive", "nonnegative", "zero", "unit")

KindFn = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class LossKind:
    """One loss kind: its function, the α it accepts and its Table 2 label factor.

    ``fn(pred, target, params)`` gets predicted and target codes ``(n, 4)`` and an object with
    float ``lam`` and ``alpha`` (for ``per_coordinate=False`` kinds also ``box_coder()``), and
    returns per-coordinate ``(n, 4)`` or per-box ``(n,)`` losses with λ applied.
    """

    name: str
    fn: KindFn
    alpha_domain: str = "positive"
    label_per_alpha: Fraction | None = None
    per_coordinate: bool = True
    approximation: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("name must be a non-empty string")
        if not callable(self.fn):
            raise ValueError(f"fn must be callable, got {self.fn!r}")
        if self.alpha_domain not in ALPHA_DOMAINS:
            raise ValueError(f"alpha_domain must be one of {ALPHA_DOMAINS}, "
                             f"got {self.alpha_domain!r}")

    def check_alpha(self, alpha: Any) -> None:
        """Raise ``ValueError`` unless ``alpha`` (already a number >= 0) is in the domain."""
        if self.alpha_domain == "zero" and alpha != 0:
            raise ValueError(f"alpha must be 0 for kind={self.name!r} (the α → 0 limit of "
                             f"(λ/α)·H_α), got {alpha!r}")
        if self.alpha_domain == "positive" and alpha == 0:
            raise ValueError(f"alpha must be > 0 for kind={self.name!r}; use kind='l1' for "
                             f"alpha = 0 (torch smooth_l1_loss with beta=0 is L1)")
        if self.alpha_domain == "unit" and not 0 <= alpha <= 1:
            raise ValueError(f"alpha (HIoU gamma) must be in [0, 1] for kind={self.name!r}, "
                             f"got {alpha!r}")

    def label_factor(self, alpha: Any) -> Any:
        r"""The label scale in units of :math:`\sigma_c s_c` (α, α/2 or 0); ``ValueError``
        for a kind without a Laplace reading."""
        if self.label_per_alpha is None:
            raise ValueError(f"kind {self.name!r} has no Laplace reading (Table 2)")
        return self.label_per_alpha * alpha


_REGISTRY: dict[str, LossKind] = {}


def register_loss_kind(kind: LossKind, *, overwrite: bool = False) -> LossKind:
    """Add ``kind`` to the registry (``overwrite=True`` replaces a kind of the same name)."""
    if not isinstance(kind, LossKind):
        raise ValueError(f"kind must be a LossKind, got {type(kind).__name__}")
    if kind.name in _REGISTRY and not overwrite:
        raise ValueError(f"box loss kind {kind.name!r} is already registered; pass "
                         f"overwrite=True")
    _REGISTRY[kind.name] = kind
    return kind


def loss_kind(name: str) -> LossKind:
    """The registered kind ``name`` (``ValueError`` listing the kinds otherwise)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be one of {loss_kinds()}, got {name!r}") from None


def loss_kinds() -> tuple[str, ...]:
    """Names of the registered kinds, built-in first."""
    return tuple(_REGISTRY)


def _losses() -> Any:  # lazy: klhuber.losses (and torch) are imported on first use
    from klhuber import losses

    return losses


def _huber(pred: Any, target: Any, p: Any) -> Any:
    # (λ/α) H_α(r), eq. 26 / 32.
    return (p.lam / p.alpha) * _losses().huber(pred - target, p.alpha)


def _smooth_l1(pred: Any, target: Any, p: Any) -> Any:
    # λ SmoothL1_β(r) with β = α; SmoothL1_β = H_β / β, so this equals "huber".  β = 0 is L1.
    r = pred - target
    if p.alpha == 0:
        return p.lam * r.abs()
    return p.lam * _losses().smooth_l1(r, p.alpha)


def _kl(pred: Any, target: Any, p: Any) -> Any:
    # (λ/α) D_{α/2, 1/α}(r): Appendix E, the upper bound of eq. 20 in place of H_α.
    return (p.lam / p.alpha) * _losses().kl_huber(pred - target, p.alpha / 2, 1.0 / p.alpha)


def _l1(pred: Any, target: Any, p: Any) -> Any:
    return p.lam * (pred - target).abs()


def _hiou(pred: Any, target: Any, p: Any) -> Any:
    # λ (1 + IoU)^γ (1 - IoU) per box, γ = alpha (HIoU, Wang et al. 2021, supplement eq. 11).
    # The IoU of two boxes decoded from one anchor equals that of the same codes decoded from
    # the unit box.
    from klhuber.detection.box_losses import decode_against_unit_box
    from klhuber.related.harmonic import hiou_loss

    if pred.shape[0] == 0:
        return pred.sum(dim=-1)
    coder = p.box_coder()
    pred_boxes = decode_against_unit_box(coder, pred)
    target_boxes = decode_against_unit_box(coder, target)
    return p.lam * hiou_loss(pred_boxes, target_boxes, p.alpha, reduction="none")


_H_APPROX = "H_α ≈ D_{α,1/α} (lower bound of eq. 20, used in eq. 21, 26, 32)"
for _kind in (
    LossKind("huber", _huber, "positive", Fraction(1), approximation=_H_APPROX),
    LossKind("smooth_l1", _smooth_l1, "nonnegative", Fraction(1), approximation=_H_APPROX),
    LossKind("kl", _kl, "positive", Fraction(1, 2)),
    LossKind("l1", _l1, "zero", Fraction(0)),
    LossKind("hiou", _hiou, "unit", None, per_coordinate=False),
):
    register_loss_kind(_kind)
del _kind

#: The built-in kinds, in registration order.
BUILTIN_KINDS: tuple[str, ...] = loss_kinds()
