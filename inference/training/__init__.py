"""Training: seed 001's feature-aligned distillation, the naive logit baseline, SAM 2 teacher fine-tuning, the plain
U-Net baseline and quantisation-aware fine-tuning of a trained student (modes: `inference.training.settings.MODES`).

No Qt here, and nothing heavy at package import: torch is imported by the submodules that need it, which only the
`maskbench train` command and the tests load. Entry point: `inference.training.runner.train(TrainOptions(...))`.
"""
