"""The prepared GPU session (issue 18): ``benchmarks/gpu_session.sh`` and its ``--dry-run``.

The dry run is the same script on the CPU at tiny sizes, so that it cannot rot between the rare
GPU sessions: every step runs, and the packed output (manifest, tarballs) is checked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from klhuber.detection.experiments import PROFILES, profile_runs

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "benchmarks" / "gpu_session.sh"
PREPARE = ROOT / "benchmarks" / "gpu_prepare.sh"
STEPS = ["check_image", "install_wheels", "pytest_cuda", "bench_losses", "bench_detection",
         "bench_toy", "detect_amp", "toy_full", "detection"]
MAX_FILES, MAX_BYTES = 8, 16 * 2**20  # what the device tool returns


def _bash(*args: str, env: dict[str, str] | None = None, timeout: float = 60
          ) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("script", [SESSION, PREPARE], ids=lambda p: p.name)
def test_scripts_parse_and_have_help(script):
    assert _bash("-n", str(script)).returncode == 0
    help_run = _bash(str(script), "--help")
    assert help_run.returncode == 0 and "Usage" in help_run.stdout


@pytest.mark.parametrize("args", [["--budget", "abc"], ["--budget", "30"], ["--bogus"]])
def test_session_rejects_bad_arguments(args, tmp_path):
    run = _bash(str(SESSION), "--dry-run", "--out", str(tmp_path), *args)
    assert run.returncode == 2
    assert "gpu_session.sh:" in run.stderr


def test_session_needs_an_output_folder():
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    run = _bash(str(SESSION), "--dry-run", env=env)
    assert run.returncode == 2 and "OUT" in run.stderr


def test_gpu_profile_adds_seeds_to_the_cpu_grid():
    cpu, gpu = PROFILES["cpu"], PROFILES["gpu"]
    assert (gpu.data, gpu.train, gpu.grid, gpu.noise_levels) == (
        cpu.data, cpu.train, cpu.grid, cpu.noise_levels)
    assert not set(gpu.seeds) & set(cpu.seeds) and len(gpu.seeds) >= 3
    cpu_ids = {r.run_id for r in profile_runs("cpu")}
    gpu_ids = {r.run_id for r in profile_runs("gpu")}
    assert gpu_ids and not gpu_ids & cpu_ids
    # the same cells (those restricted to seed 0, the clean-label bar, aside)
    cell = lambda r: (r.arch, r.preset, r.noise)  # noqa: E731
    assert {cell(r) for r in profile_runs("gpu")} <= {cell(r) for r in profile_runs("cpu")}


@pytest.mark.slow
def test_dry_run_packs_results_with_a_manifest(tmp_path):
    """The whole script on the CPU (about 2-4 minutes on two busy cores)."""
    out, budget = tmp_path / "out", 900
    env = {**os.environ, "PYTHON": sys.executable, "KLHUBER_GPU_WORK": str(tmp_path / "work")}
    env.pop("OUT", None)
    run = _bash(str(SESSION), "--dry-run", "--budget", str(budget), "--out", str(out), env=env,
                timeout=budget + 120)
    log = (out / "session.log").read_text() if (out / "session.log").exists() else run.stdout
    assert run.returncode == 0, log[-4000:]

    files = sorted(out.iterdir())
    assert 4 <= len(files) <= MAX_FILES, files
    assert all(f.is_file() and f.stat().st_size <= MAX_BYTES for f in files)
    assert {"manifest.json", "results.tar.gz", "logs.tar.gz", "session.log"} <= {
        f.name for f in files}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dry_run"] is True and manifest["device"] == "cpu"
    assert manifest["ok"] is True and manifest["wall_s"] <= budget
    steps = {s["name"]: s for s in manifest["steps"]}
    assert list(steps) == STEPS
    for name, step in steps.items():
        if name == "install_wheels" and step["status"].startswith("skipped"):
            continue  # no .whl/ in this checkout: the wheels are optional in a dry run
        assert step["status"] == "ok" and step["exit_code"] == 0, step
        assert 0 < step["limit_s"] <= budget and step["wall_s"] <= step["limit_s"] + 30
    assert manifest["versions"]["torch"] and manifest["versions"]["python"]

    with tarfile.open(out / "results.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        expected = {"results/benchmarks/bench_losses_cpu.json",
                    "results/benchmarks/bench_detection_cpu.json",
                    "results/benchmarks/bench_toy_cpu.json",
                    "results/gpu_session/environment_cpu.json",
                    "results/gpu_session/pytest_cuda_cpu.json",
                    "results/gpu_session/manifest_cpu.json",
                    "results/gpu_session/detect_amp_retinanet_cpu.json",
                    "results/toy/toy_quick.json"}
        assert expected <= set(members), sorted(members)
        detection = [n for n in members if n.startswith("results/detection/quick/")]
        assert len(detection) == 2, sorted(members)
        assert set(manifest["results"]) == set(members)
        for name in members:
            if name.endswith(".json") and not name.endswith("manifest_cpu.json"):
                document = json.load(tar.extractfile(members[name]))
                assert {"command", "versions", "date_utc"} <= set(document["provenance"]), name
        pytest_report = json.load(tar.extractfile(members[
            "results/gpu_session/pytest_cuda_cpu.json"]))
        assert sum(pytest_report["counts"].values()) >= 6  # the CUDA tests (skipped: no CUDA)
        bench = json.load(tar.extractfile(members["results/benchmarks/bench_losses_cpu.json"]))
        assert bench["devices"]["cpu"]["rows"][0]["case"] == "F.smooth_l1_loss"
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {Path(m.name).name for m in tar.getmembers() if m.isfile()}
    assert {f"{s}.log" for s, step in steps.items() if not step["status"].startswith(
        "skipped")} <= logs
