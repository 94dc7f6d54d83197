import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Cached artefacts (the digits classifier) go to a per-session folder unless set."""
    if "STABLEGEN_CACHE" not in os.environ:
        os.environ["STABLEGEN_CACHE"] = str(tmp_path_factory.mktemp("stablegen-cache"))
    yield
