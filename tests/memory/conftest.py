import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models and small 3D convolutions run several times faster on one thread when the two
    CPUs are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
