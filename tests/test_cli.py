"""The klhuber console script."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from klhuber import cli


def test_help_lists_every_command(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_every_command_module_configures_a_parser():
    import argparse
    import importlib

    for name, (module, _) in cli.COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"klhuber {name}")
        importlib.import_module(module).configure_parser(parser)
        assert parser.format_help()


def test_python_dash_m_and_book_list():
    completed = subprocess.run([sys.executable, "-m", "klhuber", "book", "list"],
                               capture_output=True, text=True, check=True)
    assert "huber_at_a_glance" in completed.stdout


# ------------------------------------------------------------------ one-line errors (#22)


@pytest.mark.parametrize("args, expected", [
    (["--lr", "-1"], "argument --lr: must be in (0, inf), got -1"),
    (["--lr", "nan"], "argument --lr: must be a finite number"),
    (["--momentum", "5"], "argument --momentum: must be in [0, 1), got 5"),
    (["--gamma", "-5"], "argument --gamma: must be in (0, 1], got -5"),
    (["--iters", "0"], "argument --iters: must be in [1, inf), got 0"),
    (["--model-kwargs", "{oops"], "argument --model-kwargs: not valid JSON"),
    (["--amp", "bf16"], "--amp bf16 needs a CUDA device"),
    (["--resume", "--overwrite"], "not allowed with argument"),
])
def test_detect_train_errors_are_one_argparse_style_line(args, expected, tmp_path, capsys):
    argv = ["detect", "train", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"), *args]
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own check
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("klhuber detect train: error: ") and expected in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "o").exists()  # nothing created


def test_detect_eval_amp_on_cpu_and_missing_checkpoint(tmp_path, capsys):
    assert cli.main(["detect", "eval", str(tmp_path / "ck.pt"), "--amp", "fp16"]) == 2
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err
    assert cli.main(["detect", "eval", str(tmp_path / "ck.pt")]) == 2
    assert f"no checkpoint at {tmp_path / 'ck.pt'}" in capsys.readouterr().err


def test_missing_extra_names_the_extra(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pycocotools")
    for name in [m for m in sys.modules if m == "pycocotools" or m.startswith("pycocotools.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    gt = tmp_path / "gt.json"
    gt.write_text("{}")
    code = cli.main(["detect", "score", "--gt", str(gt), "--predictions", str(gt)])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'klhuber[detection]'" in err and "pycocotools" in err
    assert cli.missing_extra_message(ModuleNotFoundError("x", name="yaml")).endswith(
        "pip install 'klhuber[book]'")
    assert cli.missing_extra_message(ModuleNotFoundError("x", name="numpy")) is None


def test_book_without_the_book_extra_names_it(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "yaml" or m.startswith("yaml.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    assert cli.main(["book", "list"]) == 2
    err = capsys.readouterr().err
    assert "'yaml'" in err and "pip install 'klhuber[book]'" in err and "Traceback" not in err


@pytest.mark.parametrize("profile", ["cpu", "quick"])  # a long and a short listing
def test_a_closed_pipe_ends_a_listing_quietly(tmp_path, profile):
    # `klhuber detect experiment --list | head -1`: the reader goes away before the listing ends.
    # Buffered stdout (no PYTHONUNBUFFERED), so a short listing only meets the closed pipe when
    # it is flushed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "klhuber", "detect", "experiment", "--profile", profile, "--list",
         "--results-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
