"""Pipelines: the DVC stage graph (dvc.yaml) and how to run it."""
