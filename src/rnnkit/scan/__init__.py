"""How a cell runs over time: the reference loop, the fused torch kernels, and mask helpers.

Nothing here knows about gates: a scan sees a cell only through ``project_input`` and ``recur``.
"""

from . import step_matmul, weight_cache
from .engine import engine_scan
from .fused import run_fused_masked, run_fused_segments
from .masks import (
    check_lengths,
    check_mask,
    gather_time,
    lengths_to_mask,
    padding_side,
    reverse_padded,
    valid_first_order,
)
from .parallel import linear_scan_log, linear_scan_sequential, parallel_scan, select_scan, sequential_scan
from .recompute import recompute_gates
from .reference import reference_scan, zoneout

__all__ = [
    "check_lengths", "check_mask", "engine_scan", "gather_time", "lengths_to_mask", "linear_scan_log",
    "linear_scan_sequential", "padding_side", "parallel_scan", "recompute_gates", "reference_scan", "reverse_padded", "run_fused_masked", "run_fused_segments", "select_scan",
    "sequential_scan", "step_matmul", "valid_first_order", "weight_cache", "zoneout",
]
