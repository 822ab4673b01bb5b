"""pytest plugin for the mutation runs (``make mutants``): a failing Hypothesis test fails fast.

mutmut needs only whether a mutant's tests fail, not the smallest failing example, so the
``mutation`` profile (selected by the driver with ``HYPOTHESIS_PROFILE=mutation``, which
``tests/conftest.py`` loads) keeps the deterministic examples of the usual profile and drops
the shrink phase.  A test fails in its generate phase or not at all, so no verdict changes; a
killed mutant no longer spends seconds shrinking, which under a loaded machine used to end in a
timeout instead of a failure.
"""

from __future__ import annotations

from hypothesis import Phase, settings

settings.register_profile("mutation", derandomize=True, print_blob=True,
                          phases=(Phase.explicit, Phase.reuse, Phase.generate))
