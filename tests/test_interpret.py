"""Tests of klhuber.interpret: presets (Table 1), interpretation (Table 2), inverse, conversions,
noise estimation, Appendix D helpers, CLI and bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction as F

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from klhuber import interpret as ki
from klhuber.paper_values import tables as paper

ALL_PRESETS = tuple(ki.PRESETS)
STAGES = ("proposal", "detection")


# ----------------------------------------------------------------------------- Tables 1 and 2


def test_preset_names_cover_contract():
    expected = {"publication", "implementation", "experiment_a", "experiment_b", "experiment_c",
                "torchvision", "detectron2", "appendix_d", "appendix_e"}
    assert expected <= set(ki.PRESETS)
    for name, config in ki.PRESETS.items():
        assert config.name == name
        assert config.source


def test_table1_equals_paper_exactly():
    table = ki.table1()
    assert table.columns == tuple((p, s) for p in paper.PRESET_COLUMNS for s in paper.STAGES)
    assert table.as_nested() == paper.TABLE1
    for cells in table.cells.values():
        assert all(isinstance(v, F) for v in cells.values())  # exact, not floats


def test_table2_equals_paper_exactly():
    table = ki.table2()
    assert table.as_nested() == paper.TABLE2
    for (preset, stage), cells in table.cells.items():
        assert all(isinstance(v, F) for v in cells.values())
        for row, value in cells.items():
            assert table.formatter(row, value) == paper.TABLE2_PRINTED[preset][stage][row]


def test_table_markdown_marks_differences():
    table = ki.table2(["implementation", "torchvision"])
    text = table.to_markdown(paper=paper.TABLE2)
    assert "≠ paper" not in text and "w_a/90" in text  # torchvision column has no paper value
    altered = {"implementation": {s: dict(paper.TABLE2["implementation"][s]) for s in STAGES}}
    altered["implementation"]["proposal"]["x*"] = F(1, 8)
    assert "≠ paper w_a/8" in ki.table2(["implementation"]).to_markdown(paper=altered)


def test_table2_with_anchor_in_pixels():
    table = ki.table2(["implementation"], anchor=(F(64), F(32)))
    assert table.value("implementation", "proposal", "x*") == F(64, 9)
    assert table.value("implementation", "proposal", "y*") == F(32, 9)
    assert table.value("implementation", "detection", "w~") == F(64, 5)


def test_library_presets_interpretation():
    tv = ki.interpret_config("torchvision")
    assert tv["proposal"].label_noise == (F(1, 9),) * 4
    assert tv["detection"].label_noise == (F(1, 90), F(1, 90), F(1, 45), F(1, 45))
    assert tv["detection"].prediction_noise == (F(1, 10), F(1, 10), F(1, 5), F(1, 5))
    d2 = ki.interpret_config("detectron2")
    assert d2["proposal"].label_noise == (0, 0, 0, 0)
    assert d2["detection"].prediction_noise == (F(1, 10), F(1, 10), F(1, 5), F(1, 5))
    assert ki.get_preset("torchvision_retinanet").proposal.kind == "l1"


def test_appendix_presets_are_implementation_variants():
    impl = ki.get_preset("implementation")
    d, e = ki.get_preset("appendix_d"), ki.get_preset("appendix_e")
    for s in STAGES:
        assert d.stage(s).wh_target == "linear" and d.stage(s).kind == impl.stage(s).kind
        assert e.stage(s).kind == "kl" and e.stage(s).sigma == impl.stage(s).sigma
    # D_{α/2,1/α}: half the label noise, the same prediction noise (exact)
    ie, ii = ki.interpret(e.proposal), ki.interpret(impl.proposal)
    assert ie.label_noise == tuple(v / 2 for v in ii.label_noise)
    assert ie.prediction_noise == ii.prediction_noise
    assert ie.approximations == ii.approximations[1:]  # only the log-target one is left
    assert ki.interpret(replace(e.proposal, wh_target="linear")).exact
    assert ki.interpret(d.proposal).approximations == (ki.interpret(impl.proposal)
                                                       .approximations[0],)


# ----------------------------------------------------------------------------- vs symbolic


def test_interpret_matches_symbolic_formulas():
    symbolic = pytest.importorskip("klhuber.symbolic")
    if not hasattr(symbolic, "interpreted_scales"):
        pytest.skip("klhuber.symbolic.interpreted_scales not available yet")
    import sympy as sp

    sym = symbolic.SYMBOLS
    for anchor in ((F(1), F(1)), (F(64), F(48)), (F(200), F(37, 3))):
        for name in ALL_PRESETS:
            for stage_name in STAGES:
                stage = ki.get_preset(name).stage(stage_name)
                loss = "kl" if stage.kind == "kl" else "huber"  # l1 = the α → 0 limit
                formulas = symbolic.interpreted_scales(wh_target=stage.wh_target, loss=loss)
                result = ki.interpret(stage, *anchor)
                for i, coord in enumerate(ki.COORDINATES):
                    subs = {sym["lam"]: sp.Rational(stage.lam), sym["alpha"]: sp.Rational(stage.alpha),
                            sym["sigma"]: sp.Rational(stage.sigma[i]),
                            sym["w_a"]: sp.Rational(anchor[0]), sym["h_a"]: sp.Rational(anchor[1])}
                    label, prediction = (sp.nsimplify(e.subs(subs)) for e in formulas[coord])
                    assert label == sp.Rational(result.label_noise[i]), (name, stage_name, coord)
                    assert prediction == sp.Rational(result.prediction_noise[i])


# ----------------------------------------------------------------------------- inverse


@pytest.mark.parametrize("name", ki.PAPER_PRESETS + ("torchvision", "appendix_e"))
@pytest.mark.parametrize("stage_name", STAGES)
def test_configure_inverts_interpret(name, stage_name):
    stage = ki.get_preset(name).stage(stage_name)
    result = ki.interpret(stage)
    for fixed in ({"alpha": stage.alpha}, {"lam": stage.lam}, {"sigma": stage.sigma},
                  {"alpha": stage.alpha, "lam": stage.lam}):
        again = ki.configure(result.label_noise, result.prediction_noise, kind=stage.kind,
                             **fixed)
        assert (again.lam, again.alpha, again.sigma) == (stage.lam, stage.alpha, stage.sigma)
    canonical = ki.configure(result.label_noise, result.prediction_noise, kind=stage.kind)
    assert canonical.alpha == 1
    assert ki.interpret(canonical).as_dict() == result.as_dict()


def test_configure_canonical_reproduces_experiments():
    for name in ("experiment_a", "experiment_b", "experiment_c"):
        config = ki.get_preset(name)
        label = ki.interpret(config.proposal).label_noise
        rebuilt = ki.configure_box_loss(label, ki.interpret(config.proposal).prediction_noise,
                                        ki.interpret(config.detection).prediction_noise)
        assert rebuilt.proposal == config.proposal and rebuilt.detection == config.detection


def test_configure_l1_and_errors():
    stage = ki.configure(0, (F(1, 10), F(1, 10), F(1, 5), F(1, 5)), kind="l1")
    assert stage == ki.get_preset("detectron2").detection
    with pytest.raises(ValueError, match="same for x, y, w and h"):
        ki.configure((1, 1, 1, 1), (1, 1, 1, 2))
    with pytest.raises(ValueError, match="over-determined"):
        ki.configure(F(1, 9), 1, alpha=1, lam=1)
    with pytest.raises(ValueError, match="label_noise must be 0"):
        ki.configure(F(1, 9), 1, kind="l1")
    with pytest.raises(ValueError, match="label_noise"):
        ki.configure(-1, 1)
    with pytest.raises(ValueError, match="kind"):
        ki.configure(1, 1, kind="l2")


def test_configure_floats():
    stage = ki.configure((0.05, 0.05, 0.1, 0.1), (0.2, 0.2, 0.4, 0.4))
    assert stage.alpha == 1 and abs(float(stage.lam) - 0.25) < 1e-12


def test_equivalent_triples_give_the_same_loss_of_the_box():
    """(λ/α)H_α(Δ/σ) = H_{b1}(Δ)/(b1 b2): triples with one interpretation are one loss."""
    delta = torch.linspace(-3, 3, 1001, dtype=torch.float64)
    base = ki.get_preset("implementation").proposal
    result = ki.interpret(base)
    b1, b2 = float(result.label_noise[0]), float(result.prediction_noise[0])
    reference = TF.huber_loss(delta, torch.zeros_like(delta), delta=b1, reduction="none") / (b1 * b2)
    for fixed in ({"alpha": F(1)}, {"alpha": F(1, 3)}, {"lam": F(7)}):
        stage = ki.configure(result.label_noise, result.prediction_noise, **fixed)
        loss = stage.loss(delta / float(stage.sigma[0]))
        torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- losses, conversions


def test_stage_loss_matches_torch():
    x = torch.linspace(-2, 2, 401, dtype=torch.float64)
    zeros = torch.zeros_like(x)
    s = ki.StageLoss("smooth_l1", F(3, 2), F(1, 9))
    torch.testing.assert_close(s.loss(x), 1.5 * TF.smooth_l1_loss(x, zeros, beta=1 / 9,
                                                                   reduction="none"))
    h = ki.StageLoss("huber", 2, F(1, 2))
    torch.testing.assert_close(h.loss(x), 4 * TF.huber_loss(x, zeros, delta=0.5, reduction="none"))
    l1 = ki.StageLoss("l1", 2, 0)
    torch.testing.assert_close(l1.loss(x), 2 * x.abs())
    kl = ki.StageLoss("kl", 1, 1)  # D_{1/2,1}
    expected = 0.5 * torch.exp(-x.abs() / 0.5) + x.abs() - 0.5
    torch.testing.assert_close(kl.loss(x), expected)
    # Appendix E's loss lies above the Huber loss it replaces (eq. 20, upper bound)
    assert bool((kl.loss(x) >= ki.StageLoss("huber", 1, 1).loss(x) - 1e-12).all())


def test_conversions():
    tv = ki.get_preset("torchvision")
    assert ki.from_smooth_l1(F(1, 9), bbox_reg_weights=(10, 10, 5, 5)) == tv.detection
    assert ki.from_smooth_l1(F(1, 9)) == tv.proposal
    assert ki.from_detectron2(0.0, 1.0, (10.0, 10.0, 5.0, 5.0)) == ki.get_preset("detectron2").detection
    assert ki.caffe_sigma_to_beta(3) == F(1, 9)
    impl = ki.get_preset("implementation").proposal
    assert ki.from_smooth_l1(ki.caffe_sigma_to_beta(3)).alpha == impl.alpha
    assert ki.to_smooth_l1(tv.detection) == {"beta": F(1, 9), "weight": 1,
                                             "bbox_reg_weights": (10, 10, 5, 5)}
    assert ki.to_detectron2(ki.get_preset("detectron2").detection)["SMOOTH_L1_BETA"] == 0
    hub = ki.to_huber_loss(impl)
    assert hub == {"delta": F(1, 9), "weight": 9, "bbox_reg_weights": (1, 1, 1, 1)}
    back = ki.from_huber_loss(hub["delta"], weight=hub["weight"])
    assert (back.lam, back.alpha, back.sigma) == (impl.lam, impl.alpha, impl.sigma)
    x = torch.linspace(-1, 1, 201, dtype=torch.float64)
    torch.testing.assert_close(back.loss(x), 9 * TF.huber_loss(x, torch.zeros_like(x),
                                                               delta=1 / 9, reduction="none"))
    with pytest.raises(ValueError, match="huber_loss"):
        ki.to_huber_loss(ki.get_preset("detectron2").proposal)
    assert ki.effective_lambda(10, 2400, 256) == F(16, 15)


def test_torchvision_preset_is_what_torchvision_computes():
    pytest.importorskip("torchvision")
    from torchvision.models.detection import roi_heads, rpn
    from torchvision.models.detection.retinanet import RetinaNetRegressionHead

    preset = ki.get_preset("torchvision")
    heads = roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 100)
    assert tuple(1 / F(w) for w in heads.box_coder.weights) == preset.detection.sigma
    gen = torch.Generator().manual_seed(0)
    # RoI head: sum over positives / number of sampled RoIs
    n, classes = 40, 3
    labels = [torch.tensor([1, 2, 0, 0] * 10)]
    logits = torch.randn(n, classes, generator=gen)
    regression = torch.randn(n, 4 * classes, generator=gen)
    targets = [torch.randn(n, 4, generator=gen)]
    _, box_loss = roi_heads.fastrcnn_loss(logits, regression, labels, targets)
    pos = labels[0] > 0
    pred = regression.reshape(n, classes, 4)[torch.arange(n), labels[0]][pos]
    ours = preset.detection.loss(pred - targets[0][pos]).sum() / n
    torch.testing.assert_close(box_loss, ours)
    # RPN: sum over positive anchors / number of sampled anchors (all sampled when few)
    net = rpn.RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {"training": 10, "testing": 10},
                                    {"training": 10, "testing": 10}, 0.7)
    assert tuple(net.box_coder.weights) == (1, 1, 1, 1) == preset.proposal.sigma
    anchor_labels = [torch.tensor([1.0] * 6 + [0.0] * 14 + [-1.0] * 5)]
    deltas = torch.randn(25, 4, generator=gen)
    rtargets = [torch.randn(25, 4, generator=gen)]
    _, rpn_loss = net.compute_loss(torch.randn(25, generator=gen), deltas, anchor_labels, rtargets)
    ours = preset.proposal.loss(deltas[:6] - rtargets[0][:6]).sum() / 20
    torch.testing.assert_close(rpn_loss, ours)
    head = RetinaNetRegressionHead(8, 1)
    retina = ki.get_preset("torchvision_retinanet").proposal
    assert head._loss_type == "l1" and retina.kind == "l1"
    assert tuple(head.box_coder.weights) == (1, 1, 1, 1) == retina.sigma


# ----------------------------------------------------------------------------- noise estimation


def test_fit_laplace_scale_plain_and_difference():
    rng = np.random.default_rng(1)
    x = rng.laplace(0.3, 2.0, 20_000)
    fit = ki.fit_laplace_scale(x, n_bootstrap=200)
    assert abs(fit.scale - 2.0) < 0.06 and fit.low < 2.0 < fit.high
    assert abs(fit.location - 0.3) < 0.05
    z = rng.laplace(0, 0.5, 20_000) - rng.laplace(0, 0.5, 20_000)
    dfit = ki.fit_laplace_scale(z, difference_of_two=True, n_bootstrap=200)
    assert abs(dfit.scale - 0.5) < 0.015 and dfit.low < 0.5 < dfit.high
    # Newton's root of the score equation == a bracketing root finder's
    from scipy.optimize import brentq

    u = np.abs(z[:2000])
    root = brentq(lambda b: np.sum(u - b - u * b / (b + u)), u.mean() / 2, u.mean(), xtol=1e-14)
    assert abs(ki.fit_laplace_scale(z[:2000], difference_of_two=True, center=False,
                                    n_bootstrap=0).scale - root) < 1e-10
    # the naive Laplace fit of a difference over-estimates by 3/2
    assert abs(ki.fit_laplace_scale(z, n_bootstrap=0).scale / 0.5 - 1.5) < 0.05


@pytest.mark.parametrize("mode", ["clean", "annotators"])
def test_estimate_box_noise_recovers_known_noise(mode):
    truth = 0.04
    clean, noisy = ki.synthetic_annotations(3000, truth, annotators=2, seed=3)
    reference = clean if mode == "clean" else noisy[1]
    est = ki.estimate_box_noise(noisy[0], reference, mode=mode, n_bootstrap=200, seed=0)
    for fit in (est.edge_x, est.edge_y):
        assert abs(fit.scale / truth - 1) < 0.05, fit
        assert fit.low < truth < fit.high, fit
    expected = (0.75 * truth, 0.75 * truth, 1.5 * truth, 1.5 * truth)
    np.testing.assert_allclose(est.label_noise, expected, rtol=0.05)
    assert all(lo < e < hi for lo, e, hi in zip(est.label_noise_low, expected,
                                                est.label_noise_high))
    if mode == "clean":  # the independent-edge model's centre/size scales, fitted directly
        np.testing.assert_allclose([f.scale for f in est.direct], expected, rtol=0.06)
    assert abs(est.toy_alpha / truth - 1) < 0.05


def test_suggest_box_loss():
    config = ki.suggest_box_loss((F(1, 20), F(1, 20), F(1, 10), F(1, 10)))
    experiment_c = ki.get_preset("experiment_c")
    assert config.proposal == experiment_c.proposal and config.detection == experiment_c.detection
    clean, noisy = ki.synthetic_annotations(500, 0.05, annotators=1, seed=0)
    est = ki.estimate_box_noise(noisy[0], clean, n_bootstrap=50)
    suggested = ki.suggest_box_loss(est)
    result = ki.interpret(suggested.detection)
    np.testing.assert_allclose([float(v) for v in result.label_noise], est.label_noise, rtol=0.02)
    assert suggested.proposal.lam == F(1, 4) and suggested.detection.lam == 1


def test_residual_noise():
    rng = np.random.default_rng(0)
    sizes = rng.uniform(20, 200, 5000)
    residuals = rng.laplace(0, 0.1, 5000) * sizes
    fit = ki.estimate_residual_noise(residuals, sizes, n_bootstrap=100)
    assert abs(fit.scale - 0.1) < 0.005


# ----------------------------------------------------------------------------- Appendix D


def test_linear_target_error():
    assert ki.linear_target_error(1.0) == 0.0
    r = np.linspace(0.5, 2.0, 301)
    err = ki.linear_target_error(r)
    assert np.all(err >= 0)
    near = np.array([0.999, 1.001])
    np.testing.assert_allclose(ki.linear_target_error(near), (near - 1) ** 2 / 2, rtol=1e-2)
    assert ki.matched_ratio_range(0.7) == (0.7, 1 / 0.7)
    low, high = ki.matched_ratio_range(0.49, both_sides=True)
    assert abs(low - 0.7) < 1e-12 and abs(high - 1 / 0.7) < 1e-12
    with pytest.raises(ValueError, match="ratio"):
        ki.linear_target_error(0.0)
    with pytest.raises(ValueError, match="iou_threshold"):
        ki.matched_ratio_range(1.5)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_messages():
    with pytest.raises(ValueError, match="valid names: publication, implementation"):
        ki.get_preset("faster_rcnn")
    with pytest.raises(ValueError, match="anchor_w must be > 0"):
        ki.interpret(ki.StageLoss(), 0, 10)
    with pytest.raises(ValueError, match="anchor_h must be > 0"):
        ki.interpret(ki.StageLoss(), 10, -1)
    with pytest.raises(ValueError, match="sigma must have 4 entries"):
        ki.StageLoss(sigma=(1, 1, 1))
    with pytest.raises(ValueError, match=r"sigma\[2\] \(w\) must be > 0"):
        ki.StageLoss(sigma=(1, 1, 0, 1))
    with pytest.raises(ValueError, match="lam must be > 0"):
        ki.StageLoss(lam=-1)
    with pytest.raises(ValueError, match="alpha must be 0 for kind='l1'"):
        ki.StageLoss(kind="l1")
    with pytest.raises(ValueError, match="use kind='l1'"):
        ki.StageLoss(alpha=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ki.StageLoss(kind="l2")
    with pytest.raises(ValueError, match="wh_target"):
        ki.StageLoss(wh_target="sqrt")
    with pytest.raises(ValueError, match="finite"):
        ki.StageLoss(lam=float("inf"))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        ki.estimate_box_noise(np.zeros((3, 3)), np.zeros((3, 3)))
    boxes = np.array([[0, 0, 10, 10], [5, 5, 4, 9]], dtype=float)
    with pytest.raises(ValueError, match="x2 > x1"):
        ki.estimate_box_noise(boxes, boxes)
    with pytest.raises(ValueError, match="mode"):
        ki.estimate_box_noise(boxes[:1], boxes[:1], mode="median")
    with pytest.raises(ValueError, match="edge_scale"):
        ki.synthetic_annotations(10, -0.1)


# ----------------------------------------------------------------------------- CLI


def _cli(capsys, *argv):
    from klhuber.cli import main

    rc = main(["interpret", *argv])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_cli_text_markdown_json(capsys):
    rc, out = _cli(capsys, "--preset", "implementation")
    assert rc == 0 and "w_a/9" in out and "h_a/5" in out
    rc, out = _cli(capsys, "--preset", "implementation", "--anchor", "64x64", "--markdown")
    assert rc == 0 and "| x* | 7.111 |" in out
    rc, out = _cli(capsys, "--preset", "paper,torchvision", "--json")
    payload = json.loads(out)
    assert rc == 0 and set(payload["presets"]) == set(ki.PAPER_PRESETS) | {"torchvision"}
    cell = payload["presets"]["torchvision"]["detection"]["label_noise"]["x*"]
    assert cell == {"exact": "1/90", "value": 1 / 90}
    rc, out = _cli(capsys, "--list")
    assert rc == 0 and "detectron2" in out


def test_cli_bad_input(capsys):
    rc, out = _cli(capsys, "--preset", "nope")
    assert rc == 2 and "valid names" in out
    with pytest.raises(SystemExit):
        _cli(capsys, "--anchor", "0x5")


# ----------------------------------------------------------------------------- properties, dtypes

_positive = st.fractions(min_value=F(1, 1000), max_value=F(1000), max_denominator=1000)


@settings(max_examples=60, deadline=None)
@given(lam=_positive, alpha=_positive, sigma=st.tuples(_positive, _positive, _positive, _positive),
       kind=st.sampled_from(["huber", "smooth_l1", "kl"]), w=_positive, h=_positive)
def test_configure_interpret_round_trip(lam, alpha, sigma, kind, w, h):
    stage = ki.StageLoss(kind, lam, alpha, sigma)
    result = ki.interpret(stage)
    again = ki.configure(result.label_noise, result.prediction_noise, alpha=alpha, kind=kind)
    assert again == stage
    scaled = ki.interpret(stage, w, h)  # scales are linear in the anchor size
    size = (w, h, w, h)
    assert scaled.label_noise == tuple(v * s for v, s in zip(result.label_noise, size))
    assert scaled.prediction_noise == tuple(v * s for v, s in zip(result.prediction_noise, size))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind,alpha", [("huber", F(1, 9)), ("kl", F(1, 9)), ("l1", 0)])
def test_stage_loss_low_precision(dtype, kind, alpha):
    stage = ki.StageLoss(kind, 1, alpha)
    x = torch.linspace(-4, 4, 257, dtype=torch.float64)
    reference = stage.loss(x)
    low = stage.loss(x.to(dtype))
    assert low.dtype == dtype and torch.isfinite(low).all()
    tolerance = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(low.double(), reference, rtol=tolerance, atol=tolerance)


# ----------------------------------------------------------------------------- α-sweep presets


def test_alpha_sweep_preset_round_trips_through_its_name():
    config = ki.alpha_sweep_preset(0.70711)
    assert config.name == "sweep_alpha0.70711"
    assert ki.get_preset(config.name) == config
    for stage in (config.proposal, config.detection):
        assert stage.kind == "huber" and stage.lam == 1 and stage.alpha == 0.70711
        assert stage.sigma == (F(1, 10), F(1, 10), F(1, 5), F(1, 5))
    # Table 2 reading: label scale alpha * sigma_x, prediction scale sigma_x / lambda
    interp = ki.interpret(config.detection)
    assert float(interp.label_noise[0]) == pytest.approx(0.070711)
    assert float(interp.prediction_noise[2]) == pytest.approx(0.2)
    l1 = ki.get_preset("sweep_alpha0")
    assert l1.detection.kind == "l1" and l1.detection.alpha == 0
    other = ki.alpha_sweep_preset(2, lam=F(1, 2), sigma=(1, 1, 2, 2))
    assert other.name == "sweep_alpha2-lam0.5-sigma1,1,2,2"
    assert ki.get_preset(other.name).detection == other.detection


@pytest.mark.parametrize("name", ["sweep_alpha", "sweep_alphax", "sweep_alpha1-mu3",
                                  "sweep_alpha-1"])
def test_bad_sweep_names_are_rejected(name):
    with pytest.raises(ValueError, match="alpha|preset"):
        ki.get_preset(name)
