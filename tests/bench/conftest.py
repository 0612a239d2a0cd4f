"""Fixtures: small trained digits models (trained once per process, see tests/compress/trained.py).
Tests get their own copy-safe view: verbs are always applied to copy.deepcopy(model)."""
import pytest

from tests.compress import trained


@pytest.fixture(scope="session")
def digits():
    return trained.digits()


@pytest.fixture(scope="session")
def digits_mlp():
    return trained.digits_mlp()


@pytest.fixture(scope="session")
def digits_cnn():
    return trained.digits_cnn()
