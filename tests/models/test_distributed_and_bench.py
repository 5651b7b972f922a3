"""Slow checks in subprocesses: two-process data parallel training, and the Keras-API benchmark script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

DDP_SCRIPT = textwrap.dedent("""
    import json, os
    import numpy as np
    from rnnkit.layers import LSTM, Dense, Input
    from rnnkit.models import Sequential, set_random_seed

    set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 3)).astype("float32")
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)
    model = Sequential([Input(shape=(6, 3)), LSTM(8), Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_split=0.25, accelerator="cpu",
                        devices=2, strategy="ddp", seed=1)
    steps = model.optimizer.torch_optimizer.state[next(iter(model.parameters()))]["step"].item()
    print("RESULT " + json.dumps({"rank": int(os.environ.get("LOCAL_RANK", 0)), "history": history.history,
                                  "steps": steps, "weight": float(model.layers[-1].weight.sum())}))
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in out.stdout.splitlines() if "RESULT " in line]
    assert sorted(r["rank"] for r in results) == [0, 1]
    a, b = results
    assert a["steps"] == 6  # 48 training samples / (2 processes x batch 8) x 2 epochs
    assert a["history"] == b["history"]  # metrics are reduced across processes
    assert a["weight"] == pytest.approx(b["weight"])  # replicas stay in sync


@pytest.mark.slow
def test_keras_api_benchmark_quick_run() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_keras_api.py"), "--quick", "--threads", "1",
                          "--data", "synthetic"], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| framework | epoch wall time (s) | train tokens/s | validation accuracy |" in out.stdout
    assert "| rnnkit |" in out.stdout


@pytest.mark.slow
def test_image_configs_benchmark_quick_run(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_image_configs.py"), "--quick",
                          "--parallel", "2", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout[-2000:]
    table = (tmp_path / "bench_image_configs.md").read_text()
    assert "(selected on dev)" in table and "| rows GRU max |" in table
    assert (tmp_path / "run0" / "metrics.json").is_file() and (tmp_path / "run1" / "metrics.json").is_file()
