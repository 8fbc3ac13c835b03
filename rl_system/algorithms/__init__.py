"""Training algorithms as pure torch functions (no Ray, no DeepSpeed)."""
