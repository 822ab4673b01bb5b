r"""The losses of the toy problem as one table: per loss its value, :math:`\psi`, :math:`\psi'` and
IRLS weight.

``"huber"`` is :math:`H_\alpha` (eq. 4, :func:`klhuber.losses.huber`); ``"kl_lower"`` is
:math:`D_{\alpha,1/\alpha}` (eq. 16, :func:`klhuber.losses.kl_huber` with
:math:`\beta = 1/\alpha`), the lower bound of :math:`H_\alpha` in eq. 20; ``"l1"`` and ``"l2"``
(:math:`r^2/2`) are the limits :math:`\alpha \to 0` and :math:`\alpha \to \infty`.
``"kl"``, the name before the rename, is accepted everywhere as an alias of ``"kl_lower"``
(the detection box loss's ``"kl"`` kind is the other one, :math:`D_{\alpha/2,1/\alpha}`), and
results files keep it as the key of :math:`D_{\alpha,1/\alpha}`.

Every solver of the package reads its formulas from :data:`FORMULAS` (through
:func:`loss_formulas`), so a loss is defined in one place: gradient descent uses ``psi`` (and
``psi_inplace`` on its residual blocks), the exact solver ``newton`` (its line search
``value_fast``) and ``irls_weight``, the curvature reference of the learning rates ``dpsi``, and
the fused C++ kernel of gradient descent ``kernel_code`` (its ``vpsi`` and ``rho1``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ALPHA_LOSSES", "FORMULAS", "LOSSES", "LOSS_ALIASES", "LossFormulas",
           "canonical_loss", "loss_formulas", "psi"]

#: The losses scored (H_alpha, D_{alpha,1/alpha}, and the limits L1, L2).
LOSSES = ("huber", "kl_lower", "l1", "l2")
#: The losses with a transition point alpha.
ALPHA_LOSSES = ("huber", "kl_lower")
#: Further accepted loss names, ``"kl"`` (the name before the rename, and the key of
#: :math:`D_{\alpha,1/\alpha}` in results files).
LOSS_ALIASES = {"kl": "kl_lower"}


def canonical_loss(loss: str) -> str:
    """The name in :data:`LOSSES` of ``loss`` (an alias of :data:`LOSS_ALIASES` is resolved).

    Raises ``ValueError`` for an unknown loss.
    """
    name = LOSS_ALIASES.get(loss, loss) if isinstance(loss, str) else loss
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return name


# --- huber: H_alpha ---------------------------------------------------------------------------


def _huber_value(r: Tensor, alpha: Tensor | float) -> Tensor:
    from klhuber import losses

    return losses.huber(r, alpha)


def _huber_value_fast(r: Tensor, alpha: Tensor | float) -> Tensor:
    if not isinstance(alpha, Tensor):  # one fused kernel
        return torch.nn.functional.huber_loss(r, r.new_zeros(()).expand_as(r), reduction="none",
                                              delta=alpha)
    a = r.abs()
    h = torch.minimum(a, alpha)
    return h * (a - 0.5 * h)


def _huber_psi(r: Tensor, alpha: Tensor | float) -> Tensor:
    if isinstance(alpha, Tensor):
        return torch.clamp(r, min=-alpha, max=alpha)
    return r.clamp(-alpha, alpha)


def _huber_psi_inplace(r: Tensor, alpha: Tensor) -> Tensor:
    return torch.clamp(r, min=-alpha, max=alpha, out=r)


def _huber_newton(r: Tensor, alpha: Tensor | float, eta: float) -> tuple[Tensor, Tensor]:
    a = r.abs()
    return torch.clamp(r, min=-alpha, max=alpha), (a <= alpha).to(r.dtype)


def _huber_dpsi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return (r.abs() <= alpha).to(r.dtype)


def _huber_irls(r: Tensor, alpha: Tensor | float, eta: float) -> Tensor:
    a = r.abs()
    return torch.clamp(alpha / a.clamp_min(1e-300), max=1.0)


# --- kl_lower: D_{alpha,1/alpha} --------------------------------------------------------------


def _kl_value(r: Tensor, alpha: Tensor | float) -> Tensor:
    from klhuber import losses

    return losses.kl_huber(r, alpha, 1.0 / alpha)


def _kl_value_fast(r: Tensor, alpha: Tensor | float) -> Tensor:
    a = r.abs()
    u = a / alpha
    return (u + torch.expm1(-u)) * (alpha * alpha)


def _kl_psi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return -alpha * torch.expm1(-r.abs() / alpha) * torch.sign(r)


def _kl_psi_inplace(r: Tensor, alpha: Tensor) -> Tensor:
    s = torch.sign(r)
    return r.abs_().div_(alpha).neg_().expm1_().mul_(s).mul_(-alpha)


def _kl_newton(r: Tensor, alpha: Tensor | float, eta: float) -> tuple[Tensor, Tensor]:
    a = r.abs()
    e = torch.exp(-a / alpha)
    return torch.copysign(alpha * (1.0 - e), r), e


def _kl_dpsi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return torch.exp(-r.abs() / alpha)


def _kl_irls(r: Tensor, alpha: Tensor | float, eta: float) -> Tensor:
    a = r.abs()
    u = a / alpha
    return torch.where(u > 1e-8, -torch.expm1(-u) / u.clamp_min(1e-300), 1.0 - u / 2)


# --- l1: |r| ----------------------------------------------------------------------------------


def _l1_value(r: Tensor, alpha: Tensor | float) -> Tensor:
    return r.abs()


def _l1_psi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return torch.sign(r)


def _l1_psi_inplace(r: Tensor, alpha: Tensor) -> Tensor:
    return r.sign_()


def _l1_newton(r: Tensor, alpha: Tensor | float, eta: float) -> tuple[Tensor, Tensor]:
    a = r.abs()
    return torch.sign(r), 1.0 / a.clamp_min(eta)


def _l1_dpsi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return torch.zeros_like(r)


def _l1_irls(r: Tensor, alpha: Tensor | float, eta: float) -> Tensor:
    a = r.abs()
    return 1.0 / a.clamp_min(eta)


# --- l2: r^2 / 2 ------------------------------------------------------------------------------


def _l2_value(r: Tensor, alpha: Tensor | float) -> Tensor:
    return 0.5 * r * r


def _l2_psi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return r


def _l2_newton(r: Tensor, alpha: Tensor | float, eta: float) -> tuple[Tensor, Tensor]:
    return r, torch.ones_like(r)


def _l2_dpsi(r: Tensor, alpha: Tensor | float) -> Tensor:
    return torch.ones_like(r)


def _l2_irls(r: Tensor, alpha: Tensor | float, eta: float) -> Tensor:
    return torch.ones_like(r)


@dataclass(frozen=True)
class LossFormulas:
    r"""The formulas of one loss :math:`\rho` of residual ``r`` and transition point ``alpha``.

    ``value``: :math:`\rho(r)` (from :mod:`klhuber.losses`); ``value_fast``: the same values
    with fewer operations (absolute error of a few ulps, enough to compare the exact solver's
    line-search candidates); ``psi``: the influence function :math:`\psi = \rho'` (the
    gradient of gradient descent); ``psi_inplace``: :math:`\psi` written into ``r``;
    ``newton``: :math:`(\psi(r), \psi'(r))` for a Newton step, with the IRLS weights
    :math:`1/\max(|r|, \eta)` in place of :math:`\psi'` for ``l1``; ``dpsi``:
    :math:`\psi'(r)` (0 for ``l1``); ``irls_weight``: the IRLS / MM weights
    :math:`\psi(r)/r` (a step with them never increases the objective; :math:`1/\max(|r|,
    \eta)` for ``l1``); ``kernel_code``: the loss's number in the fused C++ kernel.
    """

    name: str
    value: Callable[[Tensor, Tensor | float], Tensor]
    value_fast: Callable[[Tensor, Tensor | float], Tensor]
    psi: Callable[[Tensor, Tensor | float], Tensor]
    psi_inplace: Callable[[Tensor, Tensor], Tensor]
    newton: Callable[[Tensor, Tensor | float, float], tuple[Tensor, Tensor]]
    dpsi: Callable[[Tensor, Tensor | float], Tensor]
    irls_weight: Callable[[Tensor, Tensor | float, float], Tensor]
    kernel_code: int


#: Every loss of :data:`LOSSES` and its formulas.
FORMULAS: dict[str, LossFormulas] = {
    "huber": LossFormulas("huber", _huber_value, _huber_value_fast, _huber_psi,
                          _huber_psi_inplace, _huber_newton, _huber_dpsi, _huber_irls, 0),
    "kl_lower": LossFormulas("kl_lower", _kl_value, _kl_value_fast, _kl_psi, _kl_psi_inplace,
                             _kl_newton, _kl_dpsi, _kl_irls, 1),
    "l1": LossFormulas("l1", _l1_value, _l1_value, _l1_psi, _l1_psi_inplace, _l1_newton,
                       _l1_dpsi, _l1_irls, 2),
    "l2": LossFormulas("l2", _l2_value, _l2_value, _l2_psi, _l2_psi, _l2_newton, _l2_dpsi,
                       _l2_irls, 3),
}


def loss_formulas(loss: str) -> LossFormulas:
    """The :class:`LossFormulas` of ``loss`` (a name of :data:`LOSSES` or an alias)."""
    return FORMULAS[canonical_loss(loss)]


def psi(r: Tensor, loss: str, alpha: Tensor | float = 1.0) -> Tensor:
    """Influence function :math:`\\psi = \\rho'` of each loss (the gradient used by GD).

    ``huber``: :math:`\\psi_\\alpha(r) = \\mathrm{clamp}(r, -\\alpha, \\alpha)`;
    ``kl_lower`` (:math:`D_{\\alpha,1/\\alpha}`): :math:`\\alpha\\,\\mathrm{sign}(r)(1 -
    e^{-|r|/\\alpha})`; ``l1``: :math:`\\mathrm{sign}(r)`; ``l2`` (:math:`r^2/2`): :math:`r`.
    """
    return loss_formulas(loss).psi(r, alpha)


# The names the solvers (and the tests) have always called.


def _loss_value(r: Tensor, loss: str, alpha: Tensor | float) -> Tensor:
    return loss_formulas(loss).value(r, alpha)


def _loss_value_fast(r: Tensor, loss: str, alpha: Tensor | float) -> Tensor:
    return loss_formulas(loss).value_fast(r, alpha)


def _psi_inplace(r: Tensor, loss: str, alpha: Tensor) -> Tensor:
    return loss_formulas(loss).psi_inplace(r, alpha)


def _newton_terms(r: Tensor, loss: str, alpha: Tensor | float, eta: float) -> tuple[Tensor, Tensor]:
    return loss_formulas(loss).newton(r, alpha, eta)


def _irls_weights(r: Tensor, loss: str, alpha: Tensor | float, eta: float) -> Tensor:
    return loss_formulas(loss).irls_weight(r, alpha, eta)


def _check_loss(loss: str) -> str:
    return canonical_loss(loss)


#: The key of a loss in results payloads and files where it differs from its name.
_RESULTS_KEYS = {"kl_lower": "kl"}


def _results_key(loss: str) -> str:
    """The key of ``loss`` in a :func:`klhuber.toy.run` payload: ``"kl"`` for ``"kl_lower"``
    (the spelling of the results files written before the rename), else ``loss``."""
    name = LOSS_ALIASES.get(loss, loss)
    return _RESULTS_KEYS.get(name, name)
