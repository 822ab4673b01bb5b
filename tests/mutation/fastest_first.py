"""pytest plugin for the mutation runs (``make mutants``): run the fastest tests first, and
compute the test modules' expensive references once, before the mutants run.

mutmut runs a mutant's tests with ``-x``, so a mutant is killed by the first test that fails.
Ordered by the durations mutmut measured (``mutmut-stats.json`` in the working directory), a
killing test that takes milliseconds no longer waits behind one that takes seconds.  Before
them come the tests that killed earlier mutants of the same function (``mutmut-killers.tsv``,
written by this plugin): mutants of one function run one after another, and a test that killed
one of them usually kills the next, where the fastest tests may all pass first.  Tests are
independent, so the order changes no verdict: mutmut's clean run of the same order checks that.

mutmut forks every mutant's test process from a fork server that has collected the tests once
(``--collect-only``).  A test module may list cached functions in ``MUTATION_WARMUP``; they are
called at the end of that collection, so that each forked process inherits their results instead
of computing them again (a module-scoped fixture would run in every fork).  Only functions that
call no klhuber code may be listed: the fork server runs unmutated code, and a reference computed
there could not see a mutant.

The warm-up also imports every module that a whole run of the tests imported (recorded by the
stats and clean runs in ``mutmut-preload.txt``): libraries import parts of themselves lazily,
on first use (``torch.testing.assert_close`` imports ``torch.distributed.tensor``, 0.9 s),
and each forked process would pay for that again.  Last, it freezes the garbage collector's
generations: pytest collects garbage twice when it ends a session, and without the freeze that
walks every object the fork server holds (0.3 s per mutant).  On the 88 killed mutants of
``klhuber._kernels.neg_u`` (2 tests each), a mutant's pytest session took 0.54 s on average;
the first one profiled took 1.56 s before.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
from pathlib import Path

# the Hypothesis profile "mutation" (no shrinking) registers itself on import; it is imported
# here rather than named with -p because mutmut resets all its cached verdicts when its pytest
# arguments change
import no_shrink  # noqa: F401

#: the tests that killed earlier mutants, one ``function<TAB>test node id`` line per kill, in
#: the working directory (``mutants/``); appended to by every forked test process
KILLERS = Path("mutmut-killers.tsv")
#: the modules a whole run of the tests imported, one per line (see the module docstring)
PRELOAD = Path("mutmut-preload.txt")
_durations: dict[str, float] | None = None


def _mutant() -> str:
    """The mutant this process tests ('' outside a mutant's run: the stats and clean runs)."""
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    return name if "__mutmut_" in name else ""


def _function(mutant: str) -> str:
    return mutant.rsplit("__mutmut_", 1)[0]


def _test_durations() -> dict[str, float]:
    """mutmut's measured test durations, read once (in the fork server's warm-up, so that the
    forked processes inherit them)."""
    global _durations
    if _durations is None:
        stats = Path("mutmut-stats.json")
        if not stats.exists():  # the first (stats) run: no durations yet
            return {}
        _durations = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
    return _durations


def _killers(function: str) -> set[str]:
    if not function or not KILLERS.exists():
        return set()
    lines = KILLERS.read_text(encoding="utf-8").splitlines()
    return {node for f, _, node in (line.partition("\t") for line in lines) if f == function}


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ARG001 (hook signature)
    """Tests that killed another mutant of the same function first, then fastest first."""
    durations = _test_durations()
    killers = _killers(_function(_mutant()))
    items.sort(key=lambda item: (item.nodeid not in killers, durations.get(item.nodeid, 0.0)))


def pytest_runtest_logreport(report) -> None:
    """Record the test that killed this mutant, for the next mutants of its function."""
    mutant = _mutant()
    if mutant and report.failed:
        # one short line in append mode: concurrent writers do not interleave
        with KILLERS.open("a", encoding="utf-8") as out:
            out.write(f"{_function(mutant)}\t{report.nodeid}\n")


def pytest_sessionfinish(session) -> None:
    """After a whole run without a mutant (mutmut's stats and clean runs), record the modules
    it imported, for the fork server's warm-up."""
    if session.config.option.collectonly or _mutant() or session.testscollected == 0:
        return
    tmp = PRELOAD.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(sorted(sys.modules)) + "\n", encoding="utf-8")
    tmp.replace(PRELOAD)


#: not imported by the warm-up: private and test modules, and klhuber's own (a module that a
#: test imports late may compute something at import time, from code a mutant changes)
_NOT_PRELOADED = ("__", "test", "conftest", "klhuber")


def _preload() -> None:
    """Import the modules of :data:`PRELOAD` not imported yet (one that fails is skipped: some
    are imported only under conditions, e.g. a platform's)."""
    if not PRELOAD.exists():
        return
    for name in PRELOAD.read_text(encoding="utf-8").split():
        if name not in sys.modules and not name.startswith(_NOT_PRELOADED):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 (a warm-up: any failure only costs time)
                continue


def pytest_collection_finish(session) -> None:
    """In a collect-only run (the fork server's warm-up), call each collected module's
    ``MUTATION_WARMUP`` functions once, import what a whole run imports, and freeze the
    garbage collector's generations (see the module docstring)."""
    if not session.config.option.collectonly:
        return
    seen: set[int] = set()
    for item in session.items:
        module = getattr(item, "module", None)
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        for warm in getattr(module, "MUTATION_WARMUP", ()):
            warm()
    _preload()
    gc.collect()
    gc.freeze()
