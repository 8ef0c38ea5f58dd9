"""Evaluation through ranx, with results that carry their protocol."""
