"""mutation.toml (``make mutants``) names files, tests and mutants that exist."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((REPO / "tests" / "mutation" / "mutation.toml").read_text(encoding="utf-8"))


def _driver():
    spec = importlib.util.spec_from_file_location("mutants_driver", REPO / "tests" / "mutation" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(CONFIG["modules"]))
def test_every_module_mutates_existing_files_against_existing_tests(name):
    module = CONFIG["modules"][name]
    for pattern in module["mutate"]:
        assert list(REPO.glob(pattern)), f"{name}: {pattern} matches no file"
    for test in module["tests"]:
        assert (REPO / test).is_file(), f"{name}: {test} does not exist"
    for pattern in module.get("do_not_mutate_patterns", []):
        re.compile(pattern)


def test_the_mutated_modules_cover_the_issue():
    mutated = {p for m in CONFIG["modules"].values() for p in m["mutate"]}
    for path in ("klhuber/losses.py", "klhuber/symbolic.py",
                 "klhuber/detection/box_losses.py", "klhuber/book/scorecard.py",
                 "klhuber/book/scorecard_page.py"):
        assert path in mutated
    assert any(p.startswith("klhuber/toy/") for p in mutated)
    assert any(p.startswith("klhuber/interpret") for p in mutated)
    assert any(p.startswith("klhuber/related") for p in mutated)
    assert 0.9 <= CONFIG["target"] <= 1


MUTANTS_FILE = """\
def x_f__mutmut_orig(a):
    return a + 1


def x_f__mutmut_1(a):
    return a - 1


class Loss:
    def xǁLossǁforward__mutmut_2(self, x,
                                 y):
        z = x * y

        return z + 2

    def xǁLossǁforward__mutmut_3(self, x, y):
        return x
"""


def _workspace_with_mutants(tmp_path, monkeypatch, text=MUTANTS_FILE):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    path = tmp_path / "mod" / "mutants" / "pkg" / "sub.py"
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    return driver


def test_mutant_source_is_the_whole_mutated_function_with_its_number_hidden(tmp_path,
                                                                           monkeypatch):
    driver = _workspace_with_mutants(tmp_path, monkeypatch)
    assert driver.mutant_source("mod", "pkg.sub.x_f__mutmut_1") == (
        "def x_f__mutmut_N(a):\n    return a - 1")
    assert driver.mutant_source("mod", "pkg.sub.xǁLossǁforward__mutmut_2") == (
        "    def xǁLossǁforward__mutmut_N(self, x,\n                                 y):\n"
        "        z = x * y\n\n        return z + 2")
    assert driver.mutant_source("mod", "pkg.sub.x_f__mutmut_9") is None
    assert driver.mutant_source("mod", "pkg.other.x_f__mutmut_1") is None
    assert driver.mutant_source("other", "pkg.sub.x_f__mutmut_1") is None


def test_an_equivalent_entry_lapses_when_the_mutants_code_changes(tmp_path, monkeypatch):
    driver = _workspace_with_mutants(tmp_path, monkeypatch)
    mutant = "pkg.sub.xǁLossǁforward__mutmut_3"
    print_ = driver.fingerprint("mod", mutant)
    assert re.fullmatch(r"[0-9a-f]{12}", print_)
    assert print_ != driver.fingerprint("mod", "pkg.sub.xǁLossǁforward__mutmut_2")
    monkeypatch.setattr(driver, "statuses", lambda name, module: {mutant: "survived"})
    monkeypatch.setattr(driver, "load_rechecked", lambda name, module: {})
    listed = {mutant: {"reason": "returns x either way", "fingerprint": print_}}
    report = driver.score("mod", {}, listed)
    assert (report["equivalent"], report["survived"]) == (1, 0)
    # the function was edited: mutmut renumbered its mutants, and _3 is now another change
    _workspace_with_mutants(tmp_path / "edited", monkeypatch, MUTANTS_FILE.replace(
        "        return x\n", "        return y\n"))
    monkeypatch.setattr(driver, "WORK", tmp_path / "edited")
    report = driver.score("mod", {}, listed)
    assert (report["equivalent"], report["survived"]) == (0, 1)
    assert "listed as equivalent for other code" in report["survivors"][0]
    assert driver.fingerprint("mod", mutant) in report["survivors"][0]
    # an entry for a mutant the run no longer has is reported, for the module that owns its file
    listed["pkg.sub.x_gone__mutmut_1"] = {"reason": "code removed", "fingerprint": "0" * 12}
    report = driver.score("mod", {"mutate": ["pkg/*.py"]}, listed)
    assert report["unmatched_equivalents"] == ["pkg.sub.x_gone__mutmut_1"]
    assert driver.score("mod", {"mutate": ["other/*.py"]}, listed)["unmatched_equivalents"] == []


def test_fingerprint_option_prints_what_an_entry_needs(tmp_path, monkeypatch, capsys):
    driver = _workspace_with_mutants(tmp_path, monkeypatch)
    monkeypatch.setattr(driver, "load_config", lambda: {"modules": {"mod": {}}})
    mutant = "pkg.sub.x_f__mutmut_1"
    assert driver.main(["mod", "--fingerprint", mutant, "pkg.sub.x_f__mutmut_7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{mutant}: {driver.fingerprint('mod', mutant)}",
                   "pkg.sub.x_f__mutmut_7: not found in any workspace"]


def test_every_equivalent_mutant_has_a_reason_and_a_mutated_module():
    modules = [p.removesuffix(".py").replace("/", ".") for m in CONFIG["modules"].values()
               for p in m["mutate"]]
    names = [e["mutant"] for e in CONFIG.get("equivalent", [])]
    assert len(names) == len(set(names))
    for entry in CONFIG.get("equivalent", []):
        assert len(entry["reason"]) > 20, entry
        assert re.fullmatch(r"[0-9a-f]{12}", entry.get("fingerprint", "")), entry
        assert re.search(r"__mutmut_\d+$", entry["mutant"]), entry
        prefix = entry["mutant"].rsplit(".", 1)[0]
        assert any(Path(prefix.replace(".", "/")).match(m.replace(".", "/")) for m in modules), entry


def test_workspace_config_is_valid_toml(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    work = driver.prepare_workspace("book_guards", CONFIG["modules"]["book_guards"])
    config = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == CONFIG["modules"]["book_guards"]["mutate"]
    assert config["pytest_add_cli_args_test_selection"] == ["tests/test_scorecard.py"]
    assert config["do_not_mutate_patterns"] == CONFIG["modules"]["book_guards"][
        "do_not_mutate_patterns"]
    assert (work / "klhuber").resolve() == REPO / "klhuber"


def test_workspace_passes_a_modules_extra_pytest_args(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    module = CONFIG["modules"]["symbolic"]
    work = driver.prepare_workspace("symbolic", module)
    config = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["mutmut"]
    args = config["pytest_add_cli_args"]
    assert args[-len(module["pytest_args"]):] == module["pytest_args"]
    assert "not slow and not cuda" in args
    for i, arg in enumerate(args):  # every deselected test exists
        if arg == "--deselect":
            path, name = args[i + 1].split("::")
            assert f"def {name}(" in (REPO / path).read_text(encoding="utf-8")


def _recheck_fixture(tmp_path, monkeypatch):
    """The driver with its repository and workspace in ``tmp_path``: one module whose only
    test file (returned) passes."""
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    test_file = tmp_path / "tests" / "test_x.py"
    test_file.parent.mkdir()
    test_file.write_text("def test_x():\n    pass\n")
    (tmp_path / "tests" / "conftest.py").write_text("")
    monkeypatch.setattr(driver, "REPO", tmp_path)
    return driver, {"tests": ["tests/test_x.py"]}, test_file


def test_a_recheck_counts_only_while_the_tests_are_unchanged(tmp_path, monkeypatch):
    driver, module, test_file = _recheck_fixture(tmp_path, monkeypatch)
    monkeypatch.setattr(driver, "statuses", lambda name, module: {
        "m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "survived",
        "m.x_f__mutmut_3": "survived", "m.x_f__mutmut_4": "survived"})
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "rechecked.json").write_text(json.dumps({
        "tests_digest": driver.tests_digest(module),
        "status": {"m.x_f__mutmut_2": "killed", "m.x_f__mutmut_3": "survived"}}))
    monkeypatch.setattr(driver, "fingerprint", lambda name, mutant: "0123456789ab")
    listed = {"m.x_f__mutmut_4": {"reason": "equivalent because", "fingerprint": "0123456789ab"}}
    report = driver.score("mod", module, listed)
    assert (report["killed"], report["killed_by_recheck"], report["survived"],
            report["equivalent"]) == (2, 1, 1, 1)
    assert report["survivors"] == ["m.x_f__mutmut_3 (survived)"]
    test_file.write_text("def test_x():\n    assert True\n")  # the tests changed since
    report = driver.score("mod", module, listed)
    assert (report["killed"], report["killed_by_recheck"], report["survived"]) == (1, 0, 2)


def test_the_plugin_runs_the_fastest_tests_first(tmp_path):
    for plugin in ("fastest_first.py", "no_shrink.py"):  # the first imports the second
        shutil.copyfile(REPO / "tests" / "mutation" / plugin, tmp_path / plugin)
    (tmp_path / "test_order.py").write_text(
        "ORDER = []\n\n"
        "def test_slow():\n    ORDER.append('slow')\n\n"
        "def test_fast():\n    ORDER.append('fast')\n\n"
        "def test_new():\n    ORDER.append('new')\n\n"
        "def test_last():\n    assert ORDER == ['new', 'fast', 'slow']\n")
    (tmp_path / "mutmut-stats.json").write_text(json.dumps({"duration_by_test": {
        "test_order.py::test_slow": 2.0, "test_order.py::test_fast": 0.1,
        "test_order.py::test_last": 9.0}}))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                          "fastest_first", "test_order.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_resume_runs_only_the_unchecked_mutants(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    monkeypatch.setattr(driver, "statuses", lambda name, module: {
        "m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "not checked",
        "m.x_f__mutmut_3": "survived", "m.x_f__mutmut_4": "not checked"})
    calls = []

    class Recorded:
        def __init__(self, cmd, **kw):
            calls.append(cmd)

        def wait(self, timeout=None):
            return 0
    monkeypatch.setattr(driver.subprocess, "Popen", Recorded)
    module = {**CONFIG["modules"]["book_guards"]}
    driver.run_module("book_guards", module, 1, resume=True)
    assert calls[-1][-2:] == ["m.x_f__mutmut_2", "m.x_f__mutmut_4"]
    driver.run_module("book_guards", module, 1)  # a full run names the module's functions
    assert calls[-1][-len(module["functions"]):] == module["functions"]


def test_a_runs_cost_is_recorded_and_a_full_run_starts_the_record_anew(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    monkeypatch.setattr(driver, "prepare_workspace", lambda name, module: tmp_path / name)
    (tmp_path / "book_guards").mkdir()
    verdicts = {"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "not checked"}
    monkeypatch.setattr(driver, "statuses", lambda name, module: dict(verdicts))

    class MutmutChecksOne:
        def __init__(self, cmd, **kw):
            verdicts["m.x_f__mutmut_2"] = "survived"

        def wait(self, timeout=None):
            return 0
    monkeypatch.setattr(driver.subprocess, "Popen", MutmutChecksOne)
    cpu = iter([10.0, 25.5, 30.0, 34.0])
    monkeypatch.setattr(driver, "_children_cpu_s", lambda: next(cpu))
    module = {**CONFIG["modules"]["book_guards"]}
    driver.run_module("book_guards", module, 1, resume=True)
    assert driver.load_cost("book_guards")["cpu_s"] == 15.5
    assert driver.load_cost("book_guards")["checked"] == 1  # the one it checked, not both
    driver.run_module("book_guards", module, 1)  # a full run: its own cost only
    assert driver.load_cost("book_guards")["cpu_s"] == 4.0
    assert driver.load_cost("book_guards")["checked"] == 2
    assert driver.load_cost("scorecard") == {"wall_s": 0, "cpu_s": 0, "checked": 0}


def test_scores_of_modules_not_run_are_kept(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    monkeypatch.setattr(driver.shutil, "which", lambda exe: exe)
    monkeypatch.setattr(driver, "statuses", lambda name, module: {"m.x_f__mutmut_1": "killed"})
    (tmp_path / "scores.json").write_text(json.dumps(
        {"scorecard": {"killed": 7}, "gone": {"killed": 1}}))
    assert driver.main(["book_guards", "--report-only"]) == 0
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["scorecard"] == {"killed": 7}  # kept
    assert "gone" not in saved  # a module no longer configured is dropped
    assert saved["book_guards"]["killed"] == 1


def test_a_stopped_run_ends_mutmut_and_still_records_its_cost(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    monkeypatch.setattr(driver, "prepare_workspace", lambda name, module: tmp_path / name)
    (tmp_path / "book_guards").mkdir()
    monkeypatch.setattr(driver, "statuses", lambda name, module: {"m.x_f__mutmut_1": "killed"})
    ended = []

    class StoppedMutmut:
        def __init__(self, cmd, **kw):
            pass

        def wait(self, timeout=None):
            if not ended:
                raise KeyboardInterrupt  # SIGTERM arrives while mutmut runs
            return -2

        def send_signal(self, signum):
            ended.append(signum)

        def terminate(self):
            ended.append("terminate")

        def kill(self):
            ended.append("kill")
    monkeypatch.setattr(driver.subprocess, "Popen", StoppedMutmut)
    with pytest.raises(SystemExit, match="--resume"):
        driver.run_module("book_guards", {**CONFIG["modules"]["book_guards"]}, 1)
    assert ended == [driver.signal.SIGINT]  # mutmut cleans up on SIGINT only; enough here
    assert json.loads((tmp_path / "book_guards" / "cost.json").read_text())[0]["exit_code"] == -15


def test_a_timeout_is_a_kill_unless_a_cpu_limited_recheck_passes(tmp_path, monkeypatch):
    driver, module, test_file = _recheck_fixture(tmp_path, monkeypatch)
    monkeypatch.setattr(driver, "statuses", lambda name, module: {
        "m.x_f__mutmut_1": "timeout", "m.x_f__mutmut_2": "timeout",
        "m.x_f__mutmut_3": "timeout", "m.x_f__mutmut_4": "timeout"})
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "rechecked.json").write_text(json.dumps({
        "tests_digest": driver.tests_digest(module),
        "status": {"m.x_f__mutmut_2": "killed", "m.x_f__mutmut_3": "timeout",
                   "m.x_f__mutmut_4": "survived"}}))
    report = driver.score("mod", module, {})
    assert (report["killed"], report["survived"], report["timeouts"],
            report["timeouts_confirmed"]) == (3, 1, 3, 2)
    assert report["survivors"] == [
        "m.x_f__mutmut_4 (timeout, tests pass in a CPU-limited recheck)"]


def test_the_recheck_limits_cpu_time_from_mutmuts_clean_run(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path)
    assert driver.recheck_cpu_limit_s("mod") == 210  # no stats yet: 60 s assumed
    (tmp_path / "mod" / "mutants").mkdir(parents=True)
    (tmp_path / "mod" / "mutants" / "mutmut-stats.json").write_text(json.dumps(
        {"duration_by_test": {"a": 10.0, "b": 2.5}}))
    assert driver.recheck_cpu_limit_s("mod") == 67


def test_the_mutation_profile_does_not_shrink(tmp_path):
    shutil.copyfile(REPO / "tests" / "mutation" / "no_shrink.py", tmp_path / "no_shrink.py")
    (tmp_path / "test_profile.py").write_text(
        "from hypothesis import Phase, settings\n\n"
        "def test_profile():\n"
        "    settings.load_profile('mutation')\n"
        "    assert Phase.shrink not in settings().phases and settings().derandomize\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                          "no_shrink", "test_profile.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_recheck_refuses_when_the_tests_fail_without_a_mutant(tmp_path, monkeypatch):
    # a workspace whose sources are older than the tests: every mutant would look killed
    driver = _driver()
    monkeypatch.setattr(driver, "WORK", tmp_path / "work")
    monkeypatch.setattr(driver, "REPO", tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text("")
    (tmp_path / "tests" / "test_x.py").write_text("def test_x():\n    assert False\n")
    (tmp_path / "work" / "mod" / "mutants").mkdir(parents=True)
    monkeypatch.setattr(driver, "statuses", lambda name, module: {"m.x_f__mutmut_1": "survived"})
    with pytest.raises(SystemExit, match="fail without a mutant"):
        driver.recheck_module("mod", {"tests": ["tests/test_x.py"]}, {})
    (tmp_path / "tests" / "test_x.py").write_text("def test_x():\n    assert True\n")
    found = driver.recheck_module("mod", {"tests": ["tests/test_x.py"]}, {})
    assert found == {"m.x_f__mutmut_1": "survived"}  # passes with the (absent) mutant too


def test_a_full_run_names_every_mutant_but_the_listed_equivalents(tmp_path, monkeypatch):
    driver = _workspace_with_mutants(tmp_path, monkeypatch)
    monkeypatch.setattr(driver, "prepare_workspace", lambda name, module: tmp_path / name)
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", f"AssertionError: {driver.NOTHING_MATCHES}")

    class FakePopen:
        def __init__(self, cmd, **kwargs):
            calls.append(cmd)

        def wait(self):
            return 0

    monkeypatch.setattr(driver.subprocess, "run", fake_run)
    monkeypatch.setattr(driver.subprocess, "Popen", FakePopen)
    names = ["pkg.sub.x_f__mutmut_1", "pkg.sub.xǁLossǁforward__mutmut_2",
             "pkg.sub.xǁLossǁforward__mutmut_3"]
    monkeypatch.setattr(driver, "statuses", lambda name, module: dict.fromkeys(names, "killed"))
    listed = {names[2]: {"reason": "returns x either way",
                         "fingerprint": driver.fingerprint("mod", names[2])},
              names[0]: {"reason": "written for other code", "fingerprint": "0" * 12}}
    assert driver.run_module("mod", {}, 2, equivalent=listed) == 0
    generate, run = calls
    assert generate[-1] == driver.GENERATE_ONLY
    assert run[:4] == [driver._mutmut(), "run", "--max-children", "2"]
    assert run[4:] == names[:2]  # the stale entry's mutant runs
    cost = json.loads((tmp_path / "mod" / "cost.json").read_text())[-1]
    assert cost["checked"] == 2


def test_generation_stops_the_run_if_mutmut_does_not_stop_by_itself(tmp_path, monkeypatch):
    driver = _driver()
    monkeypatch.setattr(driver.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 0, "ran 12 mutants", ""))
    with pytest.raises(SystemExit, match="did not stop after generating"):
        driver.generate_mutants("mod", tmp_path, 2)
