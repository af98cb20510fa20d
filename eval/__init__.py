"""Metrics and benchmark evaluation (no model imports in metrics)."""
