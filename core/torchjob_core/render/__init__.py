"""Pure renderers: TrainingJob -> the Kubernetes objects and env it needs. No client, clock or randomness."""
