"""What TorchScript and torch.compile would buy the LSTM engine on this CPU, measured.

    python benchmarks/bench_compilers.py [--write] [--hidden 256] [--threads 2]

The engine (:mod:`rnnkit.scan.engine`) runs a peephole LSTM's training step as per-step matmuls
plus about eight element-wise torch ops forwards and fifteen backwards, each its own pass over
memory and its own dispatch. Issue 12 asks for "``torch.compile`` or TorchScript where they
measurably help". This script measures, at I=128 B=64 T=100 (and batch 1 for latency):

1. **The matmul floor**: the matmuls of one engine training step alone (input projection, T
   recurrent steps through :class:`rnnkit.scan.step_matmul.StepMatmul` as the engine runs them,
   T backward ``dL/dh`` products, the input and weight gradients; the large products on the GEMM
   :func:`rnnkit.scan.step_matmul.large_matmul` picks, as the engine), against the whole training
   step of ``torch.nn.LSTM`` (oneDNN's fused kernel). No element-wise work at all.
2. **Fused element-wise step**: the peephole forward and backward step math eager against
   ``torch.compile(fullgraph=True)`` (Inductor's C++ kernels, one pass), per call at B=64 and B=1,
   with the cold compile time; and the training step it projects: floor plus T x (fused forward
   + fused backward), ignoring the Python loop around them (an upper bound on the gain).
3. **Batch-1 inference loops**: the engine in eval mode against the same loop under
   ``torch.jit.script``, and against ``torch.compile`` of the whole loop as a ``while_loop``
   (generated C++ wrapper: no Python per step), microseconds per token over T=100.

4. **oneDNN's fused LSTM one step at a time**: what a variant (zoneout here: the fused step, then
   ``lerp`` of ``h`` and ``c`` towards the previous state) would train at if each step called
   ``torch.nn.LSTM``'s own kernel with ``T=1`` (``_VF.lstm``, autograd through it), against the
   engine's zoneout training step and ``torch.nn.LSTM``'s whole sequence.

Anything that fails (no C++ compiler, a torch without TorchScript) is reported, not raised.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from results_md import best_per_call as best_time  # benchmarks/results_md.py
from results_md import write_section
from torch import Tensor

import rnnkit.nn as rnn
from rnnkit import runtime
from rnnkit.scan.engine import _gate_order, _inference_weights
from rnnkit.scan.step_matmul import StepMatmul, large_matmul, linear

SECTION = "## What TorchScript and torch.compile would buy the LSTM engine (CPU)"
BATCH, STEPS, INPUT = 64, 100, 128


def matmul_floor(hidden: int, rounds: int) -> tuple[float, float]:
    """(seconds of one engine training step's matmuls alone, seconds of a torch.nn.LSTM training step)."""
    x = torch.randn(BATCH, STEPS, INPUT)
    lstm = torch.nn.LSTM(INPUT, hidden, batch_first=True)

    def torch_step() -> None:
        lstm(x)[0].sum().backward()

    w_ih, w_hh = torch.randn(4 * hidden, INPUT) * 0.05, torch.randn(4 * hidden, hidden) * 0.05
    recur = StepMatmul(w_hh, None, BATCH, adds=True)  # [B, H] x [H, 4H] + x_t, as the forward loop
    back = StepMatmul(w_hh.t().contiguous(), None, BATCH)  # [B, 4H] x [4H, H], dL/dh_{t-1}
    x_tm = x.transpose(0, 1).reshape(STEPS * BATCH, INPUT)
    xw = F.linear(x_tm, w_ih).view(STEPS, BATCH, 4 * hidden)
    h, dz = torch.randn(BATCH, hidden), torch.randn(STEPS * BATCH, 4 * hidden)
    xh = torch.randn(STEPS * BATCH, INPUT + hidden)
    gates, dh = torch.empty(BATCH, 4 * hidden), torch.empty(BATCH, hidden)
    dz_steps = dz.view(STEPS, BATCH, 4 * hidden).unbind(0)
    xw_steps = xw.unbind(0)

    def matmuls_only() -> None:  # the large products as the engine runs them: rnnkit.scan.step_matmul's choice
        linear(x_tm, w_ih)
        for x_t in xw_steps:
            recur(h, add=x_t, out=gates)
        for dz_t in dz_steps:
            back(dz_t, out=dh)
        large_matmul(dz.t(), xh)  # dL/dW for [W_ih, W_hh] in one matmul
        large_matmul(dz, w_ih)  # dL/dx

    return best_time(matmuls_only, rounds), best_time(torch_step, rounds)


def fused_per_step(hidden: int, rounds: int) -> tuple[float, float]:
    """(seconds of a zoneout training step built from T=1 calls of oneDNN's LSTM, of the engine's zoneout step)."""
    from torch import _VF

    x = torch.randn(STEPS, BATCH, INPUT, requires_grad=True)
    lstm = torch.nn.LSTM(INPUT, hidden)
    weights = [lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0]
    keep = [(torch.rand(1, BATCH, hidden) < 0.1).to(x.dtype) for _ in range(STEPS)]

    def per_step() -> None:
        h = c = x.new_zeros(1, BATCH, hidden)
        outputs = []
        for t in range(STEPS):
            _, h_new, c_new = _VF.lstm(x[t:t + 1], (h, c), weights, True, 1, 0.0, True, False, False)
            h, c = torch.lerp(h_new, h, keep[t]), torch.lerp(c_new, c, keep[t])
            outputs.append(h)
        torch.stack(outputs).sum().backward()

    engine = rnn.LSTM(INPUT, hidden, zoneout=0.1)
    engine.train()

    def engine_step() -> None:
        engine(x)[0].sum().backward()

    return best_time(per_step, rounds), best_time(engine_step, rounds)


def peephole_forward(pre: Tensor, c: Tensor, peep: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step after the matmul: gates (o, i, f, sigmoid g), c_t, tanh c_t, h_t."""
    zo, zi, zf, zg = pre.chunk(4, -1)
    i, f, s_g = torch.sigmoid(zi + peep[0] * c), torch.sigmoid(zf + peep[1] * c), torch.sigmoid(zg)
    c_new = f * c + i * (2 * s_g - 1)
    o = torch.sigmoid(zo + peep[2] * c_new)
    tanh_c = torch.tanh(c_new)
    return torch.cat([o, i, f, s_g], -1), c_new, tanh_c, o * tanh_c


def peephole_backward(gh: Tensor, gc: Tensor, gates: Tensor, c: Tensor, tanh_c: Tensor,
                      peep: Tensor) -> tuple[Tensor, Tensor]:
    """dL/d(pre-activations) and dL/dc_{t-1} from dL/dh_t, dL/dc_t (from step t+1) and the saved values."""
    o, i, f, s_g = gates.chunk(4, -1)
    g = 2 * s_g - 1
    dzo = gh * tanh_c * o * (1 - o)
    dc = gc + gh * o * (1 - tanh_c * tanh_c) + dzo * peep[2]
    dzi, dzf, dzg = dc * g * i * (1 - i), dc * c * f * (1 - f), dc * i * 2 * s_g * (1 - s_g)
    return torch.cat([dzo, dzi, dzf, dzg], -1), dc * f + dzi * peep[0] + dzf * peep[1]


def elementwise(hidden: int, batch: int, rounds: int) -> dict[str, float | str]:
    """Per-call µs of the eager and compiled step math, and the compile seconds."""
    pre, c, peep = torch.randn(batch, 4 * hidden), torch.randn(batch, hidden), torch.randn(3, hidden) * 0.1
    gh, gc = torch.randn(batch, hidden), torch.randn(batch, hidden)
    gates, _, tanh_c, _ = peephole_forward(pre, c, peep)
    calls = 200 if batch == 1 else 50
    out: dict[str, float | str] = {
        "eager fwd": best_time(lambda: peephole_forward(pre, c, peep), rounds, calls) * 1e6,
        "eager bwd": best_time(lambda: peephole_backward(gh, gc, gates, c, tanh_c, peep), rounds, calls) * 1e6}
    try:
        fwd = torch.compile(peephole_forward, fullgraph=True, dynamic=False)
        bwd = torch.compile(peephole_backward, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        fwd(pre, c, peep)
        bwd(gh, gc, gates, c, tanh_c, peep)
        out["compile s"] = time.perf_counter() - start
        got = fwd(pre, c, peep)[3]
        if not torch.allclose(got, peephole_forward(pre, c, peep)[3], atol=1e-5):
            return {**out, "error": "compiled forward disagrees with eager"}
        out["compiled fwd"] = best_time(lambda: fwd(pre, c, peep), rounds, calls) * 1e6
        out["compiled bwd"] = best_time(lambda: bwd(gh, gc, gates, c, tanh_c, peep), rounds, calls) * 1e6
    except Exception as err:  # no compiler, unsupported platform: report it
        out["error"] = f"torch.compile unavailable: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return out


def peephole_loop(xw: Tensor, h0: Tensor, c0: Tensor, w_t: Tensor, peep: Tensor) -> Tensor:
    """The engine's batch-1 inference loop (gate order o, i, f, g), written once for TorchScript and eager."""
    steps, batch, hidden = xw.shape[0], xw.shape[1], h0.shape[-1]
    out = xw.new_empty(steps, batch, hidden)
    gates = xw.new_empty(batch, 4 * hidden)
    o, i, f, g = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:3 * hidden], gates[:, 3 * hidden:]
    i_f, act = gates[:, hidden:3 * hidden].view(batch, 2, hidden), gates[:, hidden:]
    cells, tanh_c = xw.new_empty(2, batch, hidden), xw.new_empty(batch, hidden)
    c = c0
    h = h0
    for t in range(steps):
        torch.addmm(xw[t], h, w_t, out=gates)
        i_f.addcmul_(peep[:2], c.unsqueeze(1))
        torch.sigmoid_(act)
        c_new = cells[t % 2]
        torch.mul(f, c, out=c_new).addcmul_(i, g, value=2.0).sub_(i)
        torch.sigmoid_(o.addcmul_(peep[2], c_new))
        h = torch.mul(o, torch.tanh(c_new, out=tanh_c), out=out[t])
        c = c_new
    return out


def while_loop_inference(xw: Tensor, h0: Tensor, c0: Tensor, w_t: Tensor, peep: Tensor) -> Tensor:
    """The same recurrence as one ``while_loop`` (out-of-place, as higher-order ops require)."""
    from torch._higher_order_ops.while_loop import while_loop

    hidden = h0.shape[-1]

    def body(t: Tensor, h: Tensor, c: Tensor, out: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z = torch.addmm(torch.index_select(xw, 0, t.reshape(1)).squeeze(0), h, w_t)
        zo, zi, zf, zg = z.split(hidden, -1)
        i, f = torch.sigmoid(zi + peep[0] * c), torch.sigmoid(zf + peep[1] * c)
        c_new = f * c + i * (2 * torch.sigmoid(zg) - 1)  # the engine's g rows are doubled: tanh(x) = 2 s(2x) - 1
        h_new = torch.sigmoid(zo + peep[2] * c_new) * torch.tanh(c_new)
        return t + 1, h_new, c_new, out.index_copy(0, t.reshape(1), h_new.unsqueeze(0))

    start = (torch.zeros((), dtype=torch.int64), h0, c0, xw.new_zeros(xw.shape[0], xw.shape[1], hidden))
    return while_loop(lambda t, h, c, out: t < xw.shape[0], body, start)[3]  # type: ignore[no-any-return]


def batch1_loops(hidden: int, rounds: int) -> dict[str, float | str]:
    """µs per token at batch 1, T=100: the engine, the loop scripted, the loop compiled as a while_loop."""
    torch.manual_seed(0)
    layer = rnn.LSTM(INPUT, hidden, cell="peephole_lstm").eval()
    cell = layer._cells[0]
    x = torch.randn(STEPS, 1, INPUT)
    w_ih, bias, w_t, _ = _inference_weights(cell, _gate_order(hidden, x.device))  # no projection
    peep = cell.weight_peephole.detach()
    h0, c0 = torch.zeros(1, hidden), torch.zeros(1, hidden)  # two tensors: while_loop rejects aliased inputs
    res: dict[str, float | str] = {}
    with torch.no_grad():
        expected = layer(x)[0]
        res["engine"] = best_time(lambda: layer(x), rounds, 10) / STEPS * 1e6

        def check(name: str, fn: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]) -> None:
            try:
                start = time.perf_counter()
                got = fn(F.linear(x, w_ih, bias), h0, c0, w_t, peep)
                res[f"{name} compile s"] = time.perf_counter() - start
                if not torch.allclose(got, expected, atol=1e-5):
                    res[f"{name} error"] = "disagrees with the engine"
                    return
                res[name] = best_time(lambda: fn(F.linear(x, w_ih, bias), h0, c0, w_t, peep), rounds, 10) / STEPS * 1e6
            except Exception as err:
                res[f"{name} error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation warning
            check("torchscript", torch.jit.script(peephole_loop) if hasattr(torch, "jit") else peephole_loop)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(cpp_wrapper=True):
            check("compiled while_loop", torch.compile(while_loop_inference, fullgraph=True, dynamic=False))
        lstm = torch.nn.LSTM(INPUT, hidden).eval()
        res["torch.nn.LSTM"] = best_time(lambda: lstm(x), rounds, 10) / STEPS * 1e6
    return res


def fmt(value: float | str | None, spec: str = ",.1f") -> str:
    return "n/a" if value is None else (value if isinstance(value, str) else format(value, spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size")
    parser.add_argument("--rounds", type=int, default=5, help="timed samples per measurement (best kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="hidden 32, 2 rounds: checks the script runs")
    parser.add_argument("--write", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    args = parser.parse_args()
    runtime.reuse_freed_memory()  # as the rnnkit command and bench_speed.py do
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden, rounds = (32, 2) if args.quick else (args.hidden, args.rounds)
    floor, nn_step = matmul_floor(hidden, rounds)
    lines = [f"- **Matmul floor**: the matmuls of one engine training step alone take {floor * 1e3:.1f} ms; "
             f"`torch.nn.LSTM`'s whole training step takes {nn_step * 1e3:.1f} ms "
             f"({floor / nn_step:.2f}x of it before any element-wise work)."]
    per_step, engine_zoneout = fused_per_step(hidden, rounds)
    lines.append(f"- **oneDNN's LSTM one step at a time** (zoneout 0.1): {per_step * 1e3:.1f} ms a training step "
                 f"({nn_step / per_step:.2f}x `torch.nn.LSTM`'s whole sequence), against {engine_zoneout * 1e3:.1f} ms "
                 f"({nn_step / engine_zoneout:.2f}x) on rnnkit's engine: the fused kernel loses its edge when called "
                 "per step (a weight gradient and an input product per call, no batched input projection).")
    rows = []
    for batch in (BATCH, 1):
        e = elementwise(hidden, batch, rounds)
        cells = [fmt(e.get("eager fwd")), fmt(e.get("compiled fwd")), fmt(e.get("eager bwd")),
                 fmt(e.get("compiled bwd")), fmt(e.get("compile s"), ".1f")]
        rows.append(f"| {batch} | {' | '.join(cells)} |")
        if "error" in e:
            lines.append(f"- Fused element-wise step at B={batch}: {e['error']}.")
        elif batch == BATCH:
            fused = STEPS * (float(e["compiled fwd"]) + float(e["compiled bwd"])) * 1e-6
            lines.append(f"- **Projected**: matmul floor plus {STEPS} fused forward and backward steps = "
                         f"{(floor + fused) * 1e3:.1f} ms, {nn_step / (floor + fused):.2f}x `torch.nn.LSTM`'s "
                         "speed, with no Python loop, views or state handling counted: the best a compiled "
                         "element-wise step could do.")
    b1 = batch1_loops(hidden, rounds)
    latency = ", ".join(f"{name} {fmt(b1.get(name))}" for name in
                        ("torch.nn.LSTM", "engine", "torchscript", "compiled while_loop"))
    lines.append(f"- **Batch 1, µs per token** (T={STEPS}): {latency}; compile "
                 f"{fmt(b1.get('compiled while_loop compile s'), '.1f')} s for the while_loop (again for every new T).")
    lines += [f"- {name}: {value}." for name, value in b1.items() if name.endswith("error")]
    cmd = "python benchmarks/bench_compilers.py --write" + (" --quick" if args.quick else "")
    text = "\n".join([
        SECTION, "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}. Peephole LSTM, I={INPUT} H={hidden} T={STEPS}; best of {rounds} "
        "samples. What each row measures: see the script's docstring.", "",
        "| B | eager forward µs | compiled forward µs | eager backward µs | compiled backward µs | compile s |",
        "|---:|---:|---:|---:|---:|---:|", *rows, "", *lines, ""])
    print(text)
    if args.write and not args.quick:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
