"""How a cell runs over time: the reference loop, the fused torch kernels, and mask helpers.

Nothing here knows about gates: a scan sees a cell only through ``project_input`` and ``recur``.
"""

from .fused import run_fused_masked
from .masks import (
    check_lengths,
    check_mask,
    gather_time,
    lengths_to_mask,
    padding_side,
    reverse_padded,
    valid_first_order,
)
from .reference import reference_scan, zoneout

__all__ = [
    "check_lengths", "check_mask", "gather_time", "lengths_to_mask", "padding_side", "reference_scan",
    "reverse_padded", "run_fused_masked", "valid_first_order", "zoneout",
]
