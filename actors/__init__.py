"""Every Ray actor of rl_system: thin shells over the pure core in rl_system/."""
