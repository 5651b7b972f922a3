"""A metric under two processes (gloo): one process saw nothing (every position masked), the other
something. Both must reach the same value, the metric over everything seen; before the fix the
process without updates returned NaN without joining torchmetrics' gather, and the other waited
forever."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from rnnkit.metrics import Metric

    def run(rank, folder, port):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        bound = Metric("accuracy").bind(3, "multiclass")
        probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
        labels = torch.tensor([0, 1, 1, 1])
        if rank == 0:
            bound.update(probs, labels)
        else:  # every position masked out: no update
            bound.update(probs[:2], labels[:2], torch.zeros(2, dtype=torch.bool))
        empty = Metric("accuracy").bind(3, "multiclass")
        with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
            json.dump({"accuracy": bound.compute(), "empty": str(empty.compute())}, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(run, args=(sys.argv[1], int(sys.argv[2])), nprocs=2)
''')


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_process_without_updates_joins_the_gather(tmp_path: Path) -> None:
    script = tmp_path / "metric_ddp.py"
    script.write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path), str(_free_port())], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 0's four predictions: argmax 0, 1, 2, 0 against 0, 1, 1, 1 -> 2 of 4 right (macro-free accuracy)
    assert ranks[0] == ranks[1]
    assert ranks[0]["accuracy"] == 0.5
    assert ranks[0]["empty"] == "nan"  # nothing seen by any process
