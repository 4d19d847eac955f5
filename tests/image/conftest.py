"""tests/image: each test's outcome on its item, for test_appliance.py's
in-order fixture (it skips the rest of the story after a failure and keeps
the consoles)."""
import pytest


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
