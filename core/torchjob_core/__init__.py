"""The TrainingJob API shared by the operator, the CLI and the trainer: spec, CRD, renderers, policy.

Pure Python: no kopf, no kubernetes client, no torch (an import-linter contract in `make lint`).
"""
