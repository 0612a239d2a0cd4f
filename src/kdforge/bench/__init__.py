"""Measuring artifacts (`measure`) and writing the run report (`report`)."""
from kdforge.bench.measure import measure

__all__ = ["measure"]
