"""rl_system: GRPO and the reasoning-LLM toolbox. This package is the pure core and never imports Ray."""
__version__ = "0.1.0"
