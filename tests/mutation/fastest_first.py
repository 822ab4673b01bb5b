"""pytest plugin for the mutation runs (``make mutants``): run the fastest tests first.

mutmut runs a mutant's tests with ``-x``, so a mutant is killed by the first test that fails.
Ordered by the durations mutmut measured (``mutmut-stats.json`` in the working directory), a
killing test that takes milliseconds no longer waits behind one that takes seconds.  Tests are
independent, so the order changes no verdict: mutmut's clean run of the same order checks that.
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
