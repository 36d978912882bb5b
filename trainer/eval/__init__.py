"""Evaluation protocols of a trained backbone: linear probe, weighted kNN, semi-supervised fine-tuning."""
