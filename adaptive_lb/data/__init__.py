"""Data: datasets by name -> train / held-out / test splits -> device-resident batches."""

from adaptive_lb.data.build import DataBundle, Split, build_data
from adaptive_lb.data.loader import BatchLoader

__all__ = ["BatchLoader", "DataBundle", "Split", "build_data"]
