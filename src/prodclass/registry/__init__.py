"""Experiment tracking and the model registry (MLflow), behind small functions."""
