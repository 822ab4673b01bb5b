"""pytest plugin for the mutation runs (``make mutants``): run the fastest tests first, and
compute the test modules' expensive references once, before the mutants run.

mutmut runs a mutant's tests with ``-x``, so a mutant is killed by the first test that fails.
Ordered by the durations mutmut measured (``mutmut-stats.json`` in the working directory), a
killing test that takes milliseconds no longer waits behind one that takes seconds.  Tests are
independent, so the order changes no verdict: mutmut's clean run of the same order checks that.

mutmut forks every mutant's test process from a fork server that has collected the tests once
(``--collect-only``).  A test module may list cached functions in ``MUTATION_WARMUP``; they are
called at the end of that collection, so that each forked process inherits their results instead
of computing them again (a module-scoped fixture would run in every fork).  Only functions that
call no klhuber code may be listed: the fork server runs unmutated code, and a reference computed
there could not see a mutant.
"""

from __future__ import annotations

import json
from pathlib import Path

# the Hypothesis profile "mutation" (no shrinking) registers itself on import; it is imported
# here rather than named with -p because mutmut resets all its cached verdicts when its pytest
# arguments change
import no_shrink  # noqa: F401


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ARG001 (hook signature)
    stats = Path("mutmut-stats.json")
    if not stats.exists():  # the first (stats) run: no durations yet
        return
    durations = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))


def pytest_collection_finish(session) -> None:
    """In a collect-only run (the fork server's warm-up), call each collected module's
    ``MUTATION_WARMUP`` functions once."""
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
