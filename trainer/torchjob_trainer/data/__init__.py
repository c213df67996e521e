"""Datasets and DataLoader tuning: CPU budget, shared-memory safety, autotune."""
