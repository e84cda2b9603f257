"""Evaluation against ground truth and without it."""
