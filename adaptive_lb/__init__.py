"""adaptive_lb: classifiers with even per-class true-positive rates, by closed-loop training."""

__version__ = "0.1.0"
