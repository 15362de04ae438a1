"""Fixtures of the privacy tests (stand-ins live in ``fakes.py``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run on one thread (module fixtures included): tiny models are faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
