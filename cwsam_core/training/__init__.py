"""Training and scoring: label datasets, losses, metrics, the training loop, distributed training, warm starts
and retraining from corrections, evaluation with the classification engine."""
