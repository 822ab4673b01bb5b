"""Tests of klhuber.detection.engine, evaluate_checkpoint, experiments and the CLI.

Tiny on purpose: 64-px synthetic images, ResNet-18-FPN with narrow heads, a handful of
iterations, one thread.  The resume test trains the same schedule uninterrupted and
interrupted + resumed and compares the final state dicts exactly; the DDP test runs two CPU
processes with gloo through torchrun.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("pycocotools")

from torch import nn  # noqa: E402

from klhuber.detection import engine  # noqa: E402
from klhuber.detection import experiments as ex  # noqa: E402
from klhuber.detection.synthetic import generate_shapes  # noqa: E402
from klhuber.results import load_results  # noqa: E402

SMALL = {
    "backbone": "resnet18_fpn", "batch_size": 2, "lr": 0.01, "warmup_iters": 2,
    "milestones": (3,), "clip_grad_norm": 10.0, "min_size": 64, "max_size": 64,
    "anchor_sizes": (8, 16, 32, 64, 128), "box_head_dim": 32, "threads": 1,
    "progress": False, "log_every": 1,
    "model_kwargs": {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 50,
                     "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 20,
                     "rpn_batch_size_per_image": 32, "box_batch_size_per_image": 16,
                     "box_detections_per_img": 10},
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, image_size=64, num_train=8, num_val=4, max_objects=2, min_box=0.25,
                    max_box=0.6, noise_scale=0.05, seed=1)
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _config(shapes, out, **kw):
    values = {**SMALL, **kw}
    return engine.TrainConfig(data_root=str(shapes), out_dir=str(out), arch="fasterrcnn",
                              box_loss="experiment_c", **values)


def test_lr_schedule_and_flip():
    f = [engine.lr_factor(i, 4, 0.001, (6, 8), 0.1) for i in range(10)]
    assert f[0] == pytest.approx(0.001) and f[2] == pytest.approx(0.5005)
    assert f[4:6] == [1.0, 1.0] and f[6] == pytest.approx(0.1) and f[9] == pytest.approx(0.01)
    images = [torch.arange(12.0).reshape(1, 3, 4), torch.zeros(1, 3, 4)]
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 1.0, 2.0]])},
               {"boxes": torch.zeros(0, 4)}]
    engine.random_horizontal_flip(images, targets, 1.0, torch.Generator().manual_seed(0))
    assert images[0][0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert targets[0]["boxes"].tolist() == [[3.0, 0.0, 4.0, 2.0]]
    with pytest.raises(ValueError, match="amp"):
        engine.TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="milestones"):
        engine.TrainConfig(milestones=(5, 3))


def test_cosine_schedule_after_warmup():
    f = [engine.lr_factor(i, 2, 0.5, (3,), 0.1, "cosine", 10) for i in range(12)]
    assert f[0] == pytest.approx(0.5)  # warm-up factor times cos(0) = 1
    assert f[1] == pytest.approx(0.75 * 0.5 * (1 + math.cos(math.pi / 10)))
    assert f[5] == pytest.approx(0.5)  # half-way; milestones ignored
    assert f[10] == pytest.approx(0.0, abs=1e-15) and f[11] == pytest.approx(0.0, abs=1e-15)
    assert all(a >= b for a, b in zip(f[2:], f[3:]))
    with pytest.raises(ValueError, match="total_iters"):
        engine.lr_factor(1, 0, 1.0, (), 0.1, "cosine", None)
    with pytest.raises(ValueError, match="schedule"):
        engine.lr_factor(1, 0, 1.0, (), 0.1, "linear", 10)
    with pytest.raises(ValueError, match="lr_schedule"):
        engine.TrainConfig(lr_schedule="linear")


def test_interrupted_and_resumed_run_ends_with_the_same_weights(shapes, tmp_path):
    full = engine.train(_config(shapes, tmp_path / "full", iters=5, checkpoint_every=100))
    assert full["iterations"] == 5 and full["finished"] and full["nonfinite_steps"] == 0
    assert full["epochs"] == pytest.approx(5 / 4)  # crosses an epoch boundary

    part = engine.train(_config(shapes, tmp_path / "split", iters=5, stop_at=3,
                                checkpoint_every=100))
    assert part["iterations"] == 3 and not part["finished"]
    state = engine.load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert state["iteration"] == 3 and not state["final"]
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)
    resumed = engine.train(_config(shapes, tmp_path / "split", iters=5, resume=True))
    assert resumed["iterations"] == 5 and resumed["finished"]

    a = full["model"].state_dict()
    b = resumed["model"].state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    lines = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().split(
        "\n") if x]
    assert [r["iter"] for r in lines] == [1, 2, 3, 4, 5]
    ref = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().split(
        "\n") if x]
    assert [r["loss"] for r in lines] == [r["loss"] for r in ref]
    # A finished run resumes to itself at once.
    again = engine.train(_config(shapes, tmp_path / "split", iters=5, resume=True))
    assert again["iterations"] == 5


class _NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))

    def forward(self, images, targets):
        return {"loss_a": self.w.sum() * float("nan"), "loss_b": self.w.sum()}


def test_nonfinite_guard_skips_counts_and_stops(shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "build_detector", lambda config, num_classes: _NaNModel())
    summary = engine.train(_config(shapes, tmp_path / "a", iters=3, max_nonfinite=5))
    assert summary["nonfinite_steps"] == 3
    assert torch.equal(summary["model"].w.detach(), torch.ones(3))  # no step taken
    with pytest.raises(engine.NonFiniteLossError, match="non-finite"):
        engine.train(_config(shapes, tmp_path / "b", iters=4, max_nonfinite=1))


def test_evaluate_checkpoint_and_experiment_grid(shapes, tmp_path):
    profile = ex.register_profile(ex.Profile(
        name="unittest", description="test grid",
        data={"image_size": 64, "num_train": 8, "num_val": 4, "max_objects": 2,
              "min_box": 0.25, "max_box": 0.6, "seed": 1},
        noise_levels=(0.05,), runs=(("fasterrcnn", "experiment_c"), ("retinanet", "publication")),
        seeds=(0,),
        train={"fasterrcnn": {**SMALL, "iters": 2},
               "retinanet": {**{k: v for k, v in SMALL.items()
                                if k not in ("box_head_dim", "model_kwargs")},
                             "iters": 2, "model_kwargs": {"detections_per_img": 10}}},
        eval_batch_size=4))
    kwargs = {"results_dir": tmp_path / "results", "data_dir": tmp_path / "data",
              "work_dir": tmp_path / "work", "log": None}
    results = ex.run_experiment(profile, **kwargs)
    assert [r["run_id"] for r in results] == ["fasterrcnn-experiment_c-noise0.05-seed0",
                                              "retinanet-publication-noise0.05-seed0"]
    first = results[0]
    assert first["iterations"] == 2 and set(first["metrics"]) >= {"AP", "AP50", "AP75", "APs"}
    assert first["provenance"]["iterations"] == 2 and first["data"]["hash"]["val"]
    assert first["interpreted_label_noise"]["x"] == pytest.approx(1 / 20)
    assert results[1]["interpreted_label_noise"]["x"] == pytest.approx(1.0)
    assert first["data"]["true_label_noise"]["edge_scale"] == 0.05
    path = tmp_path / "results" / "unittest" / f"{first['run_id']}.json"
    mtime = path.stat().st_mtime_ns
    assert not (tmp_path / "work" / "unittest" / first["run_id"]).exists()  # cleaned up
    ex.run_experiment(profile, **kwargs)  # resumable: finished runs are skipped
    assert path.stat().st_mtime_ns == mtime
    assert len(ex.load_profile_results(tmp_path / "results", "unittest")) == 2

    # evaluate_checkpoint: a stopped run's checkpoint, results JSON with provenance.
    from klhuber.detection.evaluate import evaluate_checkpoint

    engine.train(_config(shapes, tmp_path / "ck", iters=2))
    out = tmp_path / "eval.json"
    payload = evaluate_checkpoint(tmp_path / "ck" / "checkpoint.pt", output=out, batch_size=4)
    saved = load_results(out)
    assert saved["iterations"] == 2 and saved["metrics"]["AP"] == payload["metrics"]["AP"]
    assert saved["provenance"]["dataset_hash"] == payload["eval_data"]["hash"]
    assert len(saved["metrics"]["AP_per_iou"]) == 10


def test_torchrun_two_cpu_processes_with_gloo(shapes, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "klhuber", "detect", "train",
           "--data-root", str(shapes), "--out", str(out), "--arch", "retinanet",
           "--backbone", "resnet18_fpn", "--box-loss", "experiment_a", "--iters", "2",
           "--batch-size", "1", "--min-size", "64", "--max-size", "64",
           "--anchor-sizes", "8,16,32,64,128", "--workers", "0", "--threads", "1",
           "--warmup-iters", "1", "--no-progress", "--log-every", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240,
                          cwd=str(Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2  # rank 0 prints only
    assert summaries[0]["iterations"] == 2
    state = engine.load_checkpoint(out / "checkpoint.pt")
    assert state["iteration"] == 2 and state["final"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["iter"] == 2
