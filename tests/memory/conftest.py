import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every memory test on one thread (tests/conftest.py: one_thread)."""
    yield
