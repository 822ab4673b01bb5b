"""Mutation testing of klhuber, one module at a time, with mutmut (``make mutants``).

Every module of ``mutation.toml`` gets its own mutmut workspace under ``build/mutants/<name>``:
a ``pyproject.toml`` whose ``[tool.mutmut]`` mutates only that module's files and runs only its
matching fast test files, plus links to the package, the tests and the data they read.  mutmut
then applies each mutant in a forked process and runs the tests that cover the mutated function.
Mutants listed under ``[[equivalent]]`` in ``mutation.toml`` (with the reason) do not count as
survivors, but only while the mutated function is the one the reason was written for: each entry
carries the ``fingerprint`` of the mutant's code (:func:`fingerprint`), and an entry whose
mutant's code has changed since (an edit of the function renumbers its mutants) counts as a
survivor until its reason is checked again and its fingerprint updated (``--fingerprint``).
The score per module is printed and written to ``build/mutants/scores.json``; the exit status
is 1 when a module that ran scores below the target.

``--recheck`` re-runs only the last run's survivors and timeouts, each against the module's
test files as they are now (with mutmut's ``MUTANT_UNDER_TEST`` switch) under a CPU-time limit,
so that a test written for a survivor is credited without a full run, and a timeout that a
loaded machine caused (mutmut's limits are wall-clock) is found out.  A recheck counts only while the test files are unchanged (their
digest is stored with it in ``build/mutants/<name>/rechecked.json``); a full run supersedes it.
``--resume`` continues a run that was stopped (a session's end), running only the mutants it
left unchecked.

Usage::

    python tests/mutation/mutants.py [MODULE ...] [--max-children N]
                                     [--report-only | --recheck | --resume |
                                      --fingerprint MUTANT ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).resolve().parent / "mutation.toml"
WORK = REPO / "build" / "mutants"
#: What the tests read besides the package and themselves, linked into every workspace.
LINKED = ("klhuber", "tests", "notebooks", "results", "_toc.yml", "_config.yml", "book",
          "README.md", "LICENSE")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
#: pytest plugins of the mutation runs: each mutant's tests fastest first, and Hypothesis
#: failures not shrunk (see their docstrings)
PLUGINS = tuple(Path(__file__).resolve().parent / f for f in ("fastest_first.py", "no_shrink.py"))


def load_config(path: Path = CONFIG) -> dict:
    """``mutation.toml`` as a dict: ``target``, ``modules`` and ``equivalent``."""
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare_workspace(name: str, module: dict) -> Path:
    """Create ``build/mutants/<name>`` with links to the repository and its mutmut config."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    for entry in LINKED:
        link = work / entry
        if (REPO / entry).exists() and not link.exists():
            link.symlink_to(REPO / entry)
    pytest_ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    lines = [
        "[tool.mutmut]",
        'source_paths = ["klhuber"]',
        f"only_mutate = {_toml_list(module['mutate'])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(module['tests'])}",
        # (mutmut resets every cached verdict when these arguments change: the plugins are
        # loaded through the first one, fastest_first, whose name has stayed the same)
        "pytest_add_cli_args = " + _toml_list(["-p", "no:cacheprovider", "-p", "fastest_first",
                                                "-q", "-m", "not slow and not cuda",
                                                *module.get("pytest_args", [])]),
        f"do_not_mutate_patterns = {_toml_list(module.get('do_not_mutate_patterns', []))}",
        f"timeout_multiplier = {float(module.get('timeout_multiplier', 5.0))}",
        "timeout_constant = 10.0",
        "use_git_change_detection = false",
        'process_isolation = "forkserver"',
        "",
        "[tool.pytest.ini_options]",
        f"markers = {_toml_list(pytest_ini['ini_options']['markers'])}",
        "",
    ]
    (work / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    # the tests run in mutants/, which mutmut puts on sys.path: the plugins go there
    (work / "mutants").mkdir(exist_ok=True)
    for plugin in PLUGINS:
        shutil.copyfile(plugin, work / "mutants" / plugin.name)
    return work


def _plugin_args() -> list[str]:
    return ["-p", "fastest_first"]  # it imports the others


def _child_env() -> dict[str, str]:
    """The environment of the test processes: one thread each, no display, fixed hashing."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
                PYTHONHASHSEED="0", HYPOTHESIS_PROFILE="mutation")


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


#: a mutant name that matches nothing: mutmut generates the mutants and collects its test
#: statistics, then stops (an AssertionError with NOTHING_MATCHES) before running any
GENERATE_ONLY = "klhuber.__generate_only__"
NOTHING_MATCHES = "Filtered for specific mutants, but nothing matches"


def generate_mutants(name: str, work: Path, max_children: int) -> None:
    """Let mutmut write the module's mutants and test statistics without running any."""
    done = subprocess.run([_mutmut(), "run", "--max-children", str(max_children), GENERATE_ONLY],
                          cwd=work, env=_child_env(), text=True, capture_output=True, check=False)
    if NOTHING_MATCHES not in done.stdout + done.stderr:
        raise SystemExit(f"== {name}: mutmut did not stop after generating the mutants "
                         f"(exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def run_module(name: str, module: dict, max_children: int, resume: bool = False,
               equivalent: dict[str, dict] | None = None) -> int:
    """Run mutmut for one module in its workspace; returns mutmut's exit status.

    A full run first lets mutmut generate the mutants, then runs all of them but the ones
    listed as equivalent for their current code (:func:`is_listed_equivalent`): they are left
    out of the score anyway, and each would run every test that covers its function.
    ``resume``: run only the mutants the last run left unchecked (it was stopped), named one
    by one, so mutmut keeps the verdicts it already has.  Mutants whose function changed since
    are reset by mutmut and stay "not run" in the score until a full run."""
    work = prepare_workspace(name, module)
    env = _child_env()
    cpu0, wall0 = _children_cpu_s(), time.monotonic()
    selection = module.get("functions", [])
    before = statuses(name, module) if resume else {}
    skipped = 0
    if resume:
        selection = [m for m, status in before.items() if status == "not checked"
                     and not is_listed_equivalent(name, m, equivalent or {})]
        if not selection:
            print(f"== {name}: nothing left to resume", flush=True)
            return 0
    elif equivalent:
        generate_mutants(name, work, max_children)
        found = list(statuses(name, module))
        selection = [m for m in found if not is_listed_equivalent(name, m, equivalent)]
        skipped = len(found) - len(selection)
    cmd = [_mutmut(), "run", "--max-children", str(max_children), *selection]
    shown = (f"{len(selection)} unchecked mutants" if resume else
             f"{len(selection)} mutants ({skipped} listed as equivalent not run)" if equivalent
             else " ".join(selection))
    print(f"== {name}: mutmut run {shown} (in {os.path.relpath(work, REPO)})", flush=True)
    checked_before = sum(s != "not checked" for s in before.values())
    named = set(selection)  # (mutmut keeps the old verdicts of the equivalents it did not run)
    # a stop (SIGTERM, as at a session's end, or Ctrl-C) ends mutmut cleanly and still records
    # what the run cost and checked, so that resumed runs add up to the whole
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    child = subprocess.Popen(cmd, cwd=work, env=env)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        _stop(child)
        code = -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
    cost = {"mode": "resume" if resume else "full", "max_children": max_children,
            "wall_s": round(time.monotonic() - wall0, 1),
            "cpu_s": round(_children_cpu_s() - cpu0, 1),
            "checked": sum(s != "not checked" and (resume or not equivalent or m in named)
                           for m, s in statuses(name, module).items()) - checked_before,
            "exit_code": code}
    record_cost(name, cost, fresh=not resume)
    if code == -signal.SIGTERM:
        raise SystemExit(f"== {name}: stopped; `--resume` continues it")
    return code


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop(child: subprocess.Popen) -> None:
    """Stop mutmut the way it cleans up after itself: SIGINT (it stops its workers and reaps
    its forkserver, whose CPU time then reaches ours), then SIGTERM, then SIGKILL."""
    for send, grace in ((lambda: child.send_signal(signal.SIGINT), 120),
                        (child.terminate, 30), (child.kill, None)):
        send()
        try:
            child.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cost_path(name: str) -> Path:
    return WORK / name / "cost.json"


def record_cost(name: str, cost: dict, fresh: bool) -> None:
    """Append one run's cost to ``build/mutants/<name>/cost.json`` (a full run starts anew).

    The CPU seconds are what the run's processes used, whatever else ran on the machine, so
    their sum over all modules divided by the cores estimates the whole run on an idle machine;
    the wall seconds depend on the load."""
    path = _cost_path(name)
    runs = [] if fresh or not path.exists() else json.loads(path.read_text(encoding="utf-8"))
    runs.append(cost)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs, indent=2), encoding="utf-8")
    tmp.replace(path)


def load_cost(name: str) -> dict:
    """Total wall and CPU seconds and mutants checked over the runs since the last full run."""
    path = _cost_path(name)
    runs = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    return {key: round(sum(r[key] for r in runs), 1) for key in ("wall_s", "cpu_s", "checked")}


def statuses(name: str, module: dict) -> dict[str, str]:
    """mutant name → status, as mutmut last recorded it for this module's workspace."""
    work = WORK / name
    if not (work / "mutants").exists():
        return {}
    out = subprocess.run([_mutmut(), "results", "--all", "true"], cwd=work, text=True,
                         capture_output=True, check=False).stdout
    found: dict[str, str] = {}
    patterns = tuple(p.rstrip("*") for p in module.get("functions", []))
    for line in out.splitlines():
        if ":" not in line:
            continue
        mutant, status = (s.strip() for s in line.rsplit(":", 1))
        if patterns and not mutant.startswith(patterns):
            continue
        found[mutant] = status
    return found


def mutant_source(name: str, mutant: str) -> str | None:
    """The code of ``mutant`` as mutmut wrote it in module ``name``'s workspace, with its number
    replaced by ``N``; ``None`` when the workspace has no such mutant.

    ``mutant`` is mutmut's name, e.g. ``klhuber.related.barron.x__rho_scalar__mutmut_13``: the
    function ``x__rho_scalar__mutmut_13`` of ``mutants/klhuber/related/barron.py`` (a method's
    mutants are indented in their class)."""
    function = mutant.rpartition(".")[2]
    path = WORK / name / "mutants" / _source_file(mutant)
    if not path.is_file():
        return None
    lines = _lines(path, path.stat().st_mtime_ns)
    start = re.compile(rf"^(\s*)def {re.escape(function)}\(")
    for i, line in enumerate(lines):
        found = start.match(line)
        if found:
            indent = len(found.group(1))
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or
                                        len(lines[end]) - len(lines[end].lstrip()) > indent):
                end += 1
            body = "\n".join(lines[i:end]).rstrip()
            return body.replace(function, re.sub(r"\d+$", "N", function))
    return None


def _source_file(mutant: str) -> Path:
    """The file, relative to the repository (or to a workspace's ``mutants/``), that holds
    ``mutant`` (a mutmut name such as ``klhuber.related.barron.x__rho_scalar__mutmut_13``)."""
    return Path(*mutant.rpartition(".")[0].split(".")).with_suffix(".py")


@functools.lru_cache(maxsize=16)
def _lines(path: Path, mtime_ns: int) -> tuple[str, ...]:
    """The lines of a mutants file, read once per version (``mtime_ns``): a report looks up
    every listed equivalent of a module in the same file of tens of thousands of lines."""
    return tuple(path.read_text(encoding="utf-8").splitlines())


def fingerprint(name: str, mutant: str) -> str | None:
    """First 12 hex digits of the SHA-256 of :func:`mutant_source`: it changes whenever the
    mutated function's code or the mutation changes, so an ``[[equivalent]]`` entry written for
    other code no longer matches."""
    source = mutant_source(name, mutant)
    return None if source is None else hashlib.sha256(source.encode()).hexdigest()[:12]


def is_listed_equivalent(name: str, mutant: str, equivalent: dict[str, dict]) -> bool:
    """``mutant`` is listed as equivalent, for the code it has now."""
    entry = equivalent.get(mutant)
    return entry is not None and entry.get("fingerprint") == fingerprint(name, mutant)


def tests_digest(module: dict) -> str:
    """SHA-256 of the module's test files (and the shared conftest), as they are now."""
    digest = hashlib.sha256()
    for test in [*module["tests"], "tests/conftest.py"]:
        digest.update(test.encode() + b"\0" + (REPO / test).read_bytes())
    return digest.hexdigest()


def _rechecked_path(name: str) -> Path:
    return WORK / name / "rechecked.json"


def load_rechecked(name: str, module: dict) -> dict[str, str]:
    """mutant name → status of its last recheck, if the test files are still those it used."""
    path = _rechecked_path(name)
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["status"] if data.get("tests_digest") == tests_digest(module) else {}


def recheck_cpu_limit_s(name: str) -> int:
    """CPU seconds a recheck may take: 3x the module's whole test selection as mutmut timed it
    in its clean run, plus 30 s (mutmut's own limit is per mutant's covering tests)."""
    stats = WORK / name / "mutants" / "mutmut-stats.json"
    total = (sum(json.loads(stats.read_text(encoding="utf-8"))["duration_by_test"].values())
             if stats.exists() else 60.0)
    return int(3 * total + 30)


def recheck_module(name: str, module: dict, equivalent: dict[str, dict],
                   max_children: int = 1) -> dict[str, str]:
    """Run each survivor and each timeout of the last run against the module's current tests;
    returns statuses.

    mutmut's timeouts are wall-clock limits, so a run on a loaded machine can record a
    survivor as a timeout (a kill).  The recheck limits CPU time instead (see
    :func:`recheck_cpu_limit_s`), which the load does not inflate: a timeout is confirmed when
    a test fails or the limit is reached, and becomes a survivor when the tests pass."""
    work = WORK / name
    if not (work / "mutants").exists():
        return {}
    # mutmut ran against a copy of tests/ made when it generated the mutants: refresh it
    shutil.copytree(REPO / "tests", work / "mutants" / "tests", dirs_exist_ok=True)
    for plugin in PLUGINS:
        shutil.copyfile(plugin, work / "mutants" / plugin.name)
    survivors = [m for m, status in statuses(name, module).items()
                 if status in ("survived", "no tests", "suspicious", "timeout")
                 and not is_listed_equivalent(name, m, equivalent)]
    env = _child_env()
    # newest test files first: a survivor passed the older ones, so a kill usually comes early
    tests = sorted(module["tests"], key=lambda t: (REPO / t).stat().st_mtime, reverse=True)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p",
           "no:randomly", *_plugin_args(), "-m", "not slow and not cuda",
           *module.get("pytest_args", []), *tests]
    limit = recheck_cpu_limit_s(name)
    digest = tests_digest(module)
    found = load_rechecked(name, module)  # a stopped recheck with the same tests continues
    todo = [m for m in survivors if m not in found]

    def limit_cpu() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limit, limit + 5))

    if todo:  # a test that fails without a mutant would "kill" every mutant: refuse
        clean = subprocess.call(cmd, cwd=work / "mutants", env=dict(env, MUTANT_UNDER_TEST=""),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=limit_cpu)
        if clean != 0:
            raise SystemExit(
                f"== {name}: the current tests fail without a mutant (pytest exit {clean}) in "
                f"{os.path.relpath(work, REPO)}: its sources are older than the tests. Run "
                "`--resume` (mutmut regenerates the changed functions) or a full run first.")
    print(f"== {name}: rechecking {len(todo)} survivors and timeouts ({len(survivors) - len(todo)}"
          f" done before), at most {limit} CPU-s each", flush=True)
    lock = threading.Lock()

    def check(mutant: str) -> None:
        code = subprocess.call(cmd, cwd=work / "mutants", env=dict(env, MUTANT_UNDER_TEST=mutant),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=limit_cpu)
        with lock:
            # 1: a test failed; SIGXCPU/SIGKILL: the CPU limit; 0: all passed; anything else
            # (collection error, no tests) is not a kill
            found[mutant] = ("killed" if code == 1 else
                             "timeout" if code in (-signal.SIGXCPU, -signal.SIGKILL) else
                             "survived")
            print(f"    {found[mutant]}: {mutant}", flush=True)
            atomic = _rechecked_path(name).with_suffix(".tmp")  # saved after each, atomically
            atomic.write_text(json.dumps({"tests_digest": digest, "status": found}, indent=2),
                              encoding="utf-8")
            atomic.replace(_rechecked_path(name))

    with concurrent.futures.ThreadPoolExecutor(max(1, max_children)) as pool:
        list(pool.map(check, todo))
    return found


def score(name: str, module: dict, equivalent: dict[str, dict]) -> dict:
    """Counts for one module: killed, survived, equivalent, not run; score of the rest.

    A survivor of the last mutmut run that a recheck against the current tests killed counts
    as killed (``killed_by_recheck`` says how many).  mutmut's timeouts count as killed
    (``timeouts``) unless a recheck found that the tests pass within its CPU limit; then they
    are survivors (``timeouts_confirmed``: how many a recheck confirmed).  A survivor listed as
    equivalent for other code (its fingerprint differs) stays a survivor, and says so."""
    found = statuses(name, module)
    rechecked = load_rechecked(name, module)
    counts = {"killed": 0, "survived": 0, "equivalent": 0, "not run": 0}
    by_recheck = timeouts = confirmed = 0
    survivors = []
    for mutant, status in sorted(found.items()):
        if status not in KILLED and is_listed_equivalent(name, mutant, equivalent):
            counts["equivalent"] += 1
        elif status == "timeout" and rechecked.get(mutant) == "survived":
            counts["survived"] += 1
            survivors.append(f"{mutant} (timeout, tests pass in a CPU-limited recheck)")
        elif status == "timeout":
            counts["killed"] += 1
            timeouts += 1
            confirmed += mutant in rechecked
        elif status in KILLED:
            counts["killed"] += 1
        elif rechecked.get(mutant) == "killed":
            counts["killed"] += 1
            by_recheck += 1
        elif status in ("survived", "no tests", "suspicious"):
            counts["survived"] += 1
            stale = (f"; listed as equivalent for other code: check the reason, then set its "
                     f"fingerprint to {fingerprint(name, mutant)}" if mutant in equivalent else "")
            survivors.append(f"{mutant} ({status}{stale})")
        else:
            counts["not run"] += 1
    tested = counts["killed"] + counts["survived"]
    # entries of this module's files that name no mutant of the last run: renamed or removed code
    unmatched = sorted(m for m in equivalent if m not in found and _in_files(m, module))
    return {**counts, "killed_by_recheck": by_recheck, "timeouts": timeouts,
            "timeouts_confirmed": confirmed,
            "score": counts["killed"] / tested if tested else None, "survivors": survivors,
            "unmatched_equivalents": unmatched if found else []}


def _in_files(mutant: str, module: dict) -> bool:
    """``mutant`` (a mutmut name) belongs to one of the files ``module`` mutates."""
    return any(_source_file(mutant).match(pattern) for pattern in module.get("mutate", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules of mutation.toml (default: all)")
    parser.add_argument("--max-children", type=int, default=2)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--report-only", action="store_true",
                      help="print the scores of the last runs without running mutmut")
    mode.add_argument("--recheck", action="store_true",
                      help="re-run the last runs' survivors and timeouts against the current tests only")
    mode.add_argument("--resume", action="store_true",
                      help="run only the mutants a stopped run left unchecked")
    mode.add_argument("--fingerprint", nargs="+", metavar="MUTANT",
                      help="print the fingerprint of each mutant (for its [[equivalent]] entry), "
                           "from the workspace of the module(s) given")
    args = parser.parse_args(argv)
    config = load_config()
    modules = config["modules"]
    names = args.modules or list(modules)
    unknown = [n for n in names if n not in modules]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; valid: {list(modules)}")
    equivalent = {e["mutant"]: e for e in config.get("equivalent", [])}
    if args.fingerprint:
        for mutant in args.fingerprint:
            prints = {fingerprint(name, mutant) for name in names} - {None}
            print(f"{mutant}: {', '.join(sorted(prints)) or 'not found in any workspace'}")
        return 0
    if shutil.which(_mutmut()) is None:
        print("mutmut is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    if args.recheck:
        for name in names:
            recheck_module(name, modules[name], equivalent, args.max_children)
    elif not args.report_only:
        for name in names:
            run_module(name, modules[name], args.max_children, resume=args.resume,
                       equivalent=equivalent)
            if not args.resume:
                _rechecked_path(name).unlink(missing_ok=True)  # the full run supersedes it
    target = float(config.get("target", 0.95))
    report = {name: {**score(name, modules[name], equivalent), "cost": load_cost(name)}
              for name in names}
    WORK.mkdir(parents=True, exist_ok=True)
    scores_path = WORK / "scores.json"
    # a run of some modules keeps the others' last scores
    saved = json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.exists() else {}
    saved = {k: v for k, v in saved.items() if k in modules}
    scores_path.write_text(json.dumps({**saved, **report}, indent=2), encoding="utf-8")
    failed = []
    print(f"\n{'module':<14} {'killed':>7} {'survived':>9} {'equivalent':>11} {'not run':>8}  score")
    for name, r in report.items():
        shown = "-" if r["score"] is None else f"{100 * r['score']:.1f} %"
        print(f"{name:<14} {r['killed']:>7} {r['survived']:>9} {r['equivalent']:>11} "
              f"{r['not run']:>8}  {shown}")
        if r["timeouts"]:
            print(f"    of the killed, {r['timeouts']} by mutmut's wall-clock timeout "
                  f"({r['timeouts_confirmed']} confirmed by a CPU-limited recheck)")
        for survivor in r["survivors"]:
            print(f"    survived: {survivor}")
        for entry in r["unmatched_equivalents"]:
            print(f"    listed as equivalent, but no such mutant: {entry} (remove the entry)")
        if r["score"] is not None and r["score"] < target:
            failed.append(name)
    cpu = sum(r["cost"]["cpu_s"] for r in report.values())
    cores = os.cpu_count() or 1
    checked = sum(r["cost"]["checked"] for r in report.values())
    if checked:
        print(f"cost of the runs on record: {checked} mutants, {cpu:.0f} CPU-s, so about "
              f"{cpu / cores / 60:.0f} min on {cores} idle cores")
    if failed:
        print(f"below the target of {100 * target:.0f} %: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
