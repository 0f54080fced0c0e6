"""Fine-tuning strategies: what is frozen, which learning rates, in which stages."""

STRATEGIES = ("probe", "finetune")
