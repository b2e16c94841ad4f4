"""Hostile input: the fuzz cases run are counted by kind and printed at the end of the run, so
that CI's log says how many ran ("fuzz: N cases"); Hypothesis keeps its caches out of the repo."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

CASES = pytest.StashKey[Counter]()


@pytest.fixture(scope="session", autouse=True)
def _hypothesis_home(tmp_path_factory):
    # No example database is kept (settings(database=None)), but Hypothesis still caches what it
    # learns of the code and of Unicode in .hypothesis/ of the working directory: not in the repo.
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))


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
