"""adaptive_lb: classifiers with even per-class true-positive rates, by closed-loop training.

For your own training loop: ``from adaptive_lb import RecallBalancer`` (``adaptive_lb/balancer.py``): per-class
loss weights, logit offsets and augmentation intensities, updated every epoch from held-out recall. The
``adaptive-lb`` command (``adaptive_lb/cli.py``) trains, tunes, evaluates and reports with the same object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RecallBalancer", "__version__"]

if TYPE_CHECKING:
    from adaptive_lb.balancer import RecallBalancer


def __getattr__(name: str) -> Any:
    """``RecallBalancer`` is imported on first use: ``import adaptive_lb`` (the CLI's start) stays without torch."""
    if name == "RecallBalancer":
        from adaptive_lb.balancer import RecallBalancer

        return RecallBalancer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
