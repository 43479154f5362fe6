"""transformers' own common model tests, taken from the source release of the transformers that is installed.

The tests are not in the transformers wheel; the sdist on PyPI ships `tests/test_modeling_common.py` and
`tests/test_configuration_common.py`. They are fetched once with pip into a cache folder (package registries are
reachable where the Hub is not) and copied, with three stub modules for the test helpers they import and the sdist
lacks, into the package `tests/hf_harness/` (git-ignored; not collected), which imports like `helpers` does.
Using the installed version's own tests keeps the harness in step with the library it checks.
"""

import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

HARNESS_FILES = ("test_modeling_common.py", "test_configuration_common.py")
STUBS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # Common config kwargs, each set to a non-default value, that ConfigTester checks every config honours.
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "transformer-encoder" / f"transformers-{transformers.__version__}-tests"


def _download(package_dir: Path):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--dest", tmp, f"transformers=={transformers.__version__}"],
            check=True,
        )
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        with tarfile.open(sdist) as archive:
            for name in HARNESS_FILES:
                member = archive.getmember(f"transformers-{transformers.__version__}/tests/{name}")
                (package_dir / name).write_bytes(archive.extractfile(member).read())


PACKAGE = "hf_harness"


def load():
    """Import and return `hf_harness.test_modeling_common` and `hf_harness.test_configuration_common`."""
    cache = cache_root() / "hf_tests"
    if not all((cache / name).exists() for name in HARNESS_FILES):
        cache.mkdir(parents=True, exist_ok=True)
        _download(cache)
    package_dir = Path(__file__).parent / PACKAGE
    for name in HARNESS_FILES:
        (package_dir / name).parent.mkdir(exist_ok=True)
        shutil.copyfile(cache / name, package_dir / name)
    for path, text in {"__init__.py": "", **STUBS}.items():
        stub = package_dir / path
        stub.parent.mkdir(exist_ok=True)
        (stub.parent / "__init__.py").touch()
        stub.write_text(text)
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling, configuration
