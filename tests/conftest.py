import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules that train or decode small models: a model this small gains
    nothing from a second thread, and OpenMP's spinning workers made steps 10-25x slower when
    another process shared the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
