"""Shared test fixtures and the Hypothesis settings profile.

``make test`` (and CI) run property-based tests *derandomized*: each test draws the same
examples on every run, so a green or red run can be reproduced exactly.  Set
``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples (and more of them) when hunting
for new edge cases; a case found that way belongs in the test as an ``@example``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for one test: small tensors gain nothing from threads, and two
    spin-waiting threads crawl when the machine's cores are shared."""
    yield from _one_thread()


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """:func:`one_thread` for a whole module (``pytestmark = usefixtures(...)``)."""
    yield from _one_thread()
