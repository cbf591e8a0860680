import os

import pytest
import torch

from sprec_lib import models
from sprec_lib.assets import cache_root
from sprec_lib.data.synthetic import make_synthetic

# The parts of the user's cache (sprec_lib.assets.cache_root) the tests read but leave as they are,
# or add content-keyed files to: the wheels' unpacked models and data (minutes to make again) and the
# text embeddings (keyed by texts and model). The tests see them through links.
SHARED_CACHE_PARTS = ("assets", "embeddings")


@pytest.fixture(scope="session", autouse=True)
def test_cache(tmp_path_factory):
    """The tests' own cache root, for the whole session and the notebooks' kernels it starts
    (``$SPREC_CACHE_DIR``): the shared stage cache and the CLLMR profile store are the tests' own, so
    that a test's micro-model stages or profiles never land in the user's cache, where a run could
    find them, and a stage the user cached never serves a test. :data:`SHARED_CACHE_PARTS` are
    linked to the user's."""
    user = cache_root()
    root = tmp_path_factory.mktemp("sprec-cache")
    for part in SHARED_CACHE_PARTS:
        (user / part).mkdir(parents=True, exist_ok=True)
        (root / part).symlink_to(user / part, target_is_directory=True)
    before = os.environ.get("SPREC_CACHE_DIR")
    os.environ["SPREC_CACHE_DIR"] = str(root)
    yield root
    if before is None:
        os.environ.pop("SPREC_CACHE_DIR", None)
    else:
        os.environ["SPREC_CACHE_DIR"] = before


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
