"""Inference service: the worker that restores uploaded faces."""
