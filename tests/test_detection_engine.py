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


pytestmark = pytest.mark.usefixtures("one_thread_module")


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


def test_train_restores_denormal_flushing_and_threads(shapes, tmp_path, monkeypatch):
    """train() flushes denormals and sets its thread count for speed, then puts both back: a
    float32 subnormal survives the call, also when training fails."""
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    torch.set_flush_denormal(False)
    assert (tiny * 1).item() != 0.0
    engine.train(_config(shapes, tmp_path / "a", iters=1, threads=2, flush_denormal=True))
    assert (tiny * 1).item() != 0.0 and torch.get_num_threads() == 1
    monkeypatch.setattr(engine, "build_detector", lambda config, num_classes: _NaNModel())
    with pytest.raises(engine.NonFiniteLossError):
        engine.train(_config(shapes, tmp_path / "b", iters=4, max_nonfinite=1, threads=2))
    assert (tiny * 1).item() != 0.0 and torch.get_num_threads() == 1


def test_a_run_being_trained_is_locked_against_a_second_process(shapes, tmp_path, monkeypatch):
    """Two runners on one folder would interleave checkpoints: the second is refused at once
    with a message naming the holder; the lock file alone does not make the folder 'used'."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "run"
    out.mkdir()
    with open(out / engine.LOCK, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("process 12345 on elsewhere\n")
        held.flush()
        with pytest.raises(engine.RunLockedError, match="being trained right now by process "
                                                         "12345 on elsewhere"):
            engine.train(_config(shapes, out, iters=1))
        assert not (out / engine.CHECKPOINT).exists()
    summary = engine.train(_config(shapes, out, iters=1))  # released: the folder is usable
    assert summary["iterations"] == 1

    ran = []

    def fake_run_one(spec, **kw):
        if spec.run_id == "busy":
            raise engine.RunLockedError("busy folder")
        ran.append(spec.run_id)

    monkeypatch.setattr(ex, "run_one", fake_run_one)
    specs = [type("Spec", (), {"run_id": rid})() for rid in ("busy", "free")]
    logged = []
    ex._run_shard(ex.get_profile("quick"), specs, tmp_path, tmp_path, tmp_path, "cpu", None,
                  None, log=logged.append)
    assert ran == ["free"] and any("busy: skipped, busy folder" in m for m in logged)


def test_a_configuration_error_leaves_no_run_folder(shapes, tmp_path):
    """The lock makes the run folder only after the checks that need none, so a missing data
    set (or an absent GPU) raises with no empty folder holding the lock file left behind."""
    out = tmp_path / "work" / "run"
    no_data = engine.TrainConfig(**{**_config(shapes, out, iters=1).as_dict(),
                                    "data_root": str(tmp_path / "no-data")})
    with pytest.raises(ValueError, match="has no train split"):
        engine.train(no_data)
    with pytest.raises(ValueError, match="has no train split"), engine.run_lock(no_data):
        pass
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            engine.train(engine.TrainConfig(**{**_config(shapes, out, iters=1).as_dict(),
                                               "device": "cuda"}))
    assert not (tmp_path / "work").exists()


def _one_run_profile(name):
    return ex.register_profile(ex.Profile(
        name=name, description="one tiny run",
        data={"image_size": 64, "num_train": 8, "num_val": 4, "max_objects": 2,
              "min_box": 0.25, "max_box": 0.6, "seed": 1},
        noise_levels=(0.05,), runs=(("fasterrcnn", "experiment_c"),), seeds=(0,),
        train={"fasterrcnn": {**SMALL, "iters": 1}}, eval_batch_size=4))


def test_run_one_holds_the_run_lock_through_evaluation_and_the_result_write(tmp_path,
                                                                           monkeypatch):
    """A second runner reaching the run while it is evaluated or written is refused (it would
    resume from the final checkpoint, evaluate again and overwrite the result)."""
    fcntl = pytest.importorskip("fcntl")
    from klhuber.detection import evaluate as evaluation

    (spec,) = ex.profile_runs(_one_run_profile("unittest-lock"))
    kwargs = {"results_dir": tmp_path / "results", "data_dir": tmp_path / "data",
              "work_dir": tmp_path / "work"}
    folder = tmp_path / "work" / spec.profile / spec.run_id
    checked = []

    def assert_locked(stage):
        with open(folder / engine.LOCK, "a+") as second:
            with pytest.raises(BlockingIOError):
                fcntl.flock(second.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        checked.append(stage)

    def evaluate(*args, **kw):
        assert_locked("evaluate")
        return real_evaluate(*args, **kw)

    def save_results(*args, **kw):
        assert_locked("save")
        return real_save(*args, **kw)

    real_evaluate, real_save = evaluation.evaluate, ex.save_results
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    monkeypatch.setattr(ex, "save_results", save_results)
    result = ex.run_one(spec, **kwargs)
    assert checked == ["evaluate", "save"] and result["iterations"] == 1
    assert not folder.exists()  # removed, with the lock, once the result was written
    # released: a later runner of the same folder is not refused
    root = ex.data_root_for(spec.profile, spec.noise, tmp_path / "data")
    with engine.run_lock(ex.train_config(spec, root, tmp_path / "work", "cpu")):
        assert (folder / engine.LOCK).exists()


def test_run_one_returns_a_result_another_runner_wrote_while_it_prepared(tmp_path,
                                                                        monkeypatch):
    """The result JSON is checked again once the lock is held: a runner that finished the run
    meanwhile (and released its lock) is not repeated, and its result is not overwritten."""
    from klhuber.results import save_results

    (spec,) = ex.profile_runs(_one_run_profile("unittest-recheck"))
    kwargs = {"results_dir": tmp_path / "results", "data_dir": tmp_path / "data",
              "work_dir": tmp_path / "work"}
    out = ex.result_path(spec, tmp_path / "results")
    real_config = ex.train_config

    def train_config(*args, **kw):  # the other runner finishes while this one prepares
        save_results(out, {"run_id": spec.run_id, "by": "the other runner"})
        return real_config(*args, **kw)

    def train(*args, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ex, "train_config", train_config)
    monkeypatch.setattr(engine, "train", train)
    before = out.read_bytes() if out.exists() else None
    assert before is None
    result = ex.run_one(spec, **kwargs)
    assert result["by"] == "the other runner"
    assert load_results(out)["by"] == "the other runner"
    assert not (tmp_path / "work" / spec.profile / spec.run_id).exists()


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


# ------------------------------------------------------------------ runs are never lost (#22)


def test_existing_run_is_refused_unless_resume_or_overwrite(shapes, tmp_path):
    out = tmp_path / "run"
    engine.train(_config(shapes, out, iters=2))
    checkpoint, metrics = out / "checkpoint.pt", out / "metrics.jsonl"
    before = (checkpoint.read_bytes(), metrics.read_text())
    with pytest.raises(engine.RunExistsError, match="--resume.*--overwrite"):
        engine.train(_config(shapes, out, iters=2))
    assert (checkpoint.read_bytes(), metrics.read_text()) == before  # nothing touched
    # --resume with other options names them and refuses, before any training
    resume = _config(shapes, out, iters=2, resume=True).as_dict()
    with pytest.raises(engine.RunExistsError) as info:
        engine.train(engine.TrainConfig(**{**resume, "box_loss": "publication",
                                           "min_size": 80, "max_size": 80}))
    message = str(info.value)
    assert "box_loss" in message and "min_size" in message and "max_size" in message
    assert "iters" not in message.replace("max_size", "")
    with pytest.raises(engine.RunExistsError, match="arch"):
        engine.train(engine.TrainConfig(**{**resume, "arch": "retinanet"}))
    assert checkpoint.read_bytes() == before[0]
    # runtime options may change on resume (a finished run returns at once)
    again = engine.train(_config(shapes, out, iters=2, resume=True, log_every=5, threads=1))
    assert again["iterations"] == 2
    # --overwrite replaces the run
    replaced = engine.train(_config(shapes, out, iters=1, overwrite=True))
    assert replaced["iterations"] == 1
    assert engine.load_checkpoint(checkpoint)["iteration"] == 1
    assert [json.loads(x)["iter"] for x in metrics.read_text().splitlines()] == [1]
    with pytest.raises(ValueError, match="resume and overwrite"):
        _config(shapes, out, resume=True, overwrite=True)


def test_config_paths_are_absolute_and_ranges_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = engine.TrainConfig(data_root="data", weights_path="w.pt")
    assert config.data_root == str(tmp_path / "data")
    assert config.weights_path == str(tmp_path / "w.pt")
    for bad in ({"lr": 0}, {"lr": float("inf")}, {"momentum": 5}, {"momentum": -0.1},
                {"gamma": -5}, {"gamma": 0}, {"weight_decay": -1},
                {"amp": "bf16", "device": "cpu"}, {"amp": "fp16"}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            engine.TrainConfig(**bad)
    engine.TrainConfig(amp="bf16", device="cuda")  # checked when the run starts
    engine.TrainConfig(amp="auto", device="cpu")  # auto is none off CUDA, as documented


def test_damaged_checkpoint_is_named_with_advice(shapes, tmp_path):
    out = tmp_path / "run"
    engine.train(_config(shapes, out, iters=1))
    checkpoint = out / "checkpoint.pt"
    data = checkpoint.read_bytes()
    for damaged in (data[: len(data) // 2], b""):
        checkpoint.write_bytes(damaged)
        with pytest.raises(engine.CheckpointError) as info:
            engine.load_checkpoint(checkpoint)
        assert str(checkpoint) in str(info.value) and "--overwrite" in str(info.value)
        with pytest.raises(engine.CheckpointError, match="damaged"):
            engine.train(_config(shapes, out, iters=2, resume=True))
    torch.save({"model": {}}, checkpoint)
    with pytest.raises(engine.CheckpointError, match="not a checkpoint"):
        engine.load_checkpoint(checkpoint)


def test_stale_temporaries_removed_and_unwritable_folder_fails_first(shapes, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.pt.x1y2.tmp"
    stale.write_bytes(b"\0" * 1000)  # a save killed half-way
    messages = []
    engine.train(_config(shapes, out, iters=1), log=messages.append)
    assert not stale.exists() and any("temporary" in m for m in messages)
    assert engine.load_checkpoint(out / "checkpoint.pt")["iteration"] == 1

    import tempfile

    from klhuber.detection import data as dd

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    def no_data(*args, **kwargs):  # the check comes before any work
        raise AssertionError("data loaded before the output folder was checked")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(dd, "CocoDetection", no_data)
    with pytest.raises(PermissionError, match="not writable"):
        engine.train(_config(shapes, tmp_path / "readonly", iters=1))


def _sigterm_at_flip(monkeypatch, count):
    """Send this process SIGTERM right after training's ``count``-th image flip (that is, inside
    an iteration); return the unpatched flip."""
    import signal

    original = engine.random_horizontal_flip
    flips = []

    def flip_then_signal(*args, **kwargs):
        original(*args, **kwargs)
        flips.append(1)
        if len(flips) == count:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(engine, "random_horizontal_flip", flip_then_signal)
    return original


def test_sigterm_writes_a_final_checkpoint_and_the_run_resumes(shapes, tmp_path, monkeypatch):
    import signal

    original = _sigterm_at_flip(monkeypatch, 2)
    out = tmp_path / "run"
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(engine.TrainingInterrupted) as info:
        engine.train(_config(shapes, out, iters=4, checkpoint_every=100))
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers restored
    assert info.value.iteration == 2 and info.value.signum == signal.SIGTERM
    assert "--resume" in str(info.value)
    state = engine.load_checkpoint(out / "checkpoint.pt")
    assert state["iteration"] == 2 and not state["final"]
    monkeypatch.setattr(engine, "random_horizontal_flip", original)
    resumed = engine.train(_config(shapes, out, iters=4, resume=True))
    assert resumed["iterations"] == 4 and resumed["finished"]


def test_cli_train_refuses_a_run_folder_with_a_one_line_error(shapes, tmp_path, capsys):
    from klhuber import cli

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"iter": 1}\n')
    args = ["detect", "train", "--data-root", str(shapes), "--out", str(out), "--iters", "1",
            "--no-progress"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("klhuber detect train: error: output folder")
    assert "--overwrite" in err and len(err.splitlines()) == 1
    assert (out / "metrics.jsonl").read_text() == '{"iter": 1}\n'


def test_cli_sigterm_resume_and_eval_from_another_directory(shapes, tmp_path, monkeypatch,
                                                            capsys):
    import signal

    from klhuber import cli

    _sigterm_at_flip(monkeypatch, 1)
    monkeypatch.chdir(shapes.parent)
    out = tmp_path / "run"
    args = ["detect", "train", "--data-root", shapes.name, "--out", str(out),  # relative root
            "--backbone", "resnet18_fpn", "--box-loss", "experiment_c", "--iters", "2",
            "--batch-size", "2", "--min-size", "64", "--max-size", "64",
            "--anchor-sizes", "8,16,32,64,128", "--box-head-dim", "32", "--workers", "0",
            "--threads", "1", "--no-progress", "--warmup-iters", "1",
            "--model-kwargs", json.dumps(SMALL["model_kwargs"])]
    assert cli.main(args) == 128 + signal.SIGTERM
    assert "SIGTERM received: stopped after iteration 1" in capsys.readouterr().err
    state = engine.load_checkpoint(out / "checkpoint.pt")
    assert state["iteration"] == 1
    assert json.loads(state["config"])["data_root"] == str(shapes.resolve())  # stored absolute
    assert cli.main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["iterations"] == 2
    monkeypatch.chdir(tmp_path)  # evaluation from elsewhere finds the data
    assert cli.main(["detect", "eval", str(out / "checkpoint.pt"), "--batch-size", "4",
                     "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("AP ")


def test_a_late_sigint_or_a_loader_killed_by_the_signal_still_checkpoints(shapes, tmp_path,
                                                                         monkeypatch):
    import signal

    import torch.utils.data as tud

    original = engine.lr_factor

    def factor_then_signal(it, *args):  # scheduler.step() after the step of iteration `it`
        if it == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(it, *args)

    monkeypatch.setattr(engine, "lr_factor", factor_then_signal)
    with pytest.raises(engine.TrainingInterrupted) as info:
        engine.train(_config(shapes, tmp_path / "a", iters=4, checkpoint_every=100))
    assert info.value.signum == signal.SIGINT and info.value.iteration == 2
    assert engine.load_checkpoint(tmp_path / "a" / "checkpoint.pt")["iteration"] == 2
    monkeypatch.setattr(engine, "lr_factor", original)

    class DyingLoader(tud.DataLoader):  # workers that exit on Ctrl-C, as torch's do
        def __iter__(self):
            batches = super().__iter__()
            yield next(batches)
            os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("DataLoader worker (pid 1) exited unexpectedly")

    monkeypatch.setattr(tud, "DataLoader", DyingLoader)
    with pytest.raises(engine.TrainingInterrupted) as info:
        engine.train(_config(shapes, tmp_path / "b", iters=4, checkpoint_every=100))
    assert info.value.iteration == 1
    assert engine.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["iteration"] == 1


def test_default_folders_follow_the_current_directory(tmp_path, monkeypatch):
    """The experiments' default folders are relative: the same call run from another
    directory (an installed wheel, a second checkout) writes there, not into this checkout."""
    for default in (ex.DEFAULT_DATA_DIR, ex.DEFAULT_WORK_DIR, ex.DEFAULT_RESULTS_DIR):
        assert not default.is_absolute()
    monkeypatch.chdir(tmp_path)
    assert ex.DEFAULT_RESULTS_DIR.resolve() == tmp_path.resolve() / "results" / "detection"
