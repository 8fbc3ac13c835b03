"""Model loading and saving in Hugging Face format; the offline SmolLM2 converter; tiny test models."""
from rl_system.models.loading import (
    check_model_dir, dtype_from_name, has_chat_template, load_model, load_policy, load_tokenizer, make_layer_cut,
    make_tiny_model, pick_device, prepare_smollm2, read_model_config, visible_gpu_index,
)

__all__ = ["check_model_dir", "dtype_from_name", "has_chat_template", "load_model", "load_policy", "load_tokenizer",
           "make_layer_cut", "make_tiny_model", "pick_device", "prepare_smollm2", "read_model_config",
           "visible_gpu_index"]
