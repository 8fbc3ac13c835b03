"""Model loading and saving in Hugging Face format; the offline SmolLM2 converter; tiny test models; LoRA."""
from rl_system.models.loading import (
    check_model_dir, has_chat_template, load_model, load_policy, load_tokenizer, make_layer_cut,
    make_tiny_model, pick_device, prepare_smollm2, read_model_config, visible_gpu_index,
)
from rl_system.models.precision import (
    PrecisionError, Resolved, TrainingPrecision, announce, describe, detect, dtype_from_name, publish_dtype, resolve,
)
from rl_system.models.lora import apply_lora, merged_named_parameters, save_merged

__all__ = ["PrecisionError", "Resolved", "TrainingPrecision", "announce", "apply_lora", "check_model_dir", "describe", "detect",
           "dtype_from_name", "has_chat_template", "load_model", "load_policy", "load_tokenizer", "make_layer_cut",
           "make_tiny_model", "merged_named_parameters", "pick_device", "prepare_smollm2", "publish_dtype",
           "read_model_config", "resolve", "save_merged", "visible_gpu_index"]
