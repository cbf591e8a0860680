import pytest
import torch

from sprec_lib import models
from sprec_lib.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules that train or decode small models: a model this small gains
    nothing from a second thread, and OpenMP's spinning workers made steps 10-25x slower when
    another process shared the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The micro dataset and tokenizer the trainer-level tests build models on (a module that needs
# another defines its own ``ds``).
@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_items=30, sizes=(16, 4, 4))


@pytest.fixture(scope="module")
def tok(ds):
    return models.train_tokenizer(ds, 512)
