"""Disagreement metrics, the VLM judge, verdicts and distillation weights. No Qt here."""
