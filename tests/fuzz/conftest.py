"""Hostile input: the fuzz cases run are counted by kind and printed at the end of the run, so
that CI's log says how many ran ("fuzz: N cases")."""
from __future__ import annotations

from collections import Counter

import pytest

CASES = pytest.StashKey[Counter]()


@pytest.fixture(scope="session")
def fuzz_cases(request) -> Counter:
    """Count one case of a kind ("schemathesis", "hypothesis") with fuzz_cases[kind] += 1."""
    return request.config.stash.setdefault(CASES, Counter())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    cases = config.stash.get(CASES, None)
    if not cases:
        return
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(cases.items()))
    terminalreporter.write_sep("-", "fuzz")
    terminalreporter.write_line(f"fuzz: {sum(cases.values())} cases ({kinds})")
