"""Baselines for the distillation table: what a distilled student has to beat to be worth its training run.

Submodules are imported explicitly (the classical one needs only numpy and OpenCV; learned ones may need torch),
so this package imports nothing itself."""
