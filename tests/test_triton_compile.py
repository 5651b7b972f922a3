"""The Triton kernels compile for a GPU, without one.

The engine tests run the kernels in Triton's interpreter on machines without a GPU, which checks
their arithmetic but not that Triton's compiler accepts them (types, constexpr branches, shapes):
a kernel can pass every interpreter test and still fail to compile on the first GPU it meets.
Triton compiles ahead of time for a named target with its bundled LLVM and ``ptxas``, no driver
needed, so this test builds the kernels for an H100 (sm_90) and an A100 (sm_80), float32 and
float64, in the flag combinations the engines launch: everything on, and a projected cell's
(``UPDATE_H`` off). It runs in a fresh process: the test session imports the kernels in
interpreter mode, where they cannot be compiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton", reason="triton is not installed (it ships with CUDA builds of PyTorch)")

SCRIPT = textwrap.dedent("""
    import sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from rnnkit.scan import _triton_kernels as K

    def build(kernel, constants, dtype, arch, warps=4):
        names = kernel.arg_names
        signature = {}
        for name in names:
            if name in constants:
                signature[name] = "constexpr"
            elif name.endswith(("_row", "_col")) or name in ("batch", "hidden"):
                signature[name] = "i32"
            else:
                signature[name] = "*" + dtype
        source = ASTSource(fn=kernel, signature=signature,
                           constexprs={(names.index(k),): v for k, v in constants.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
        assert compiled.asm["ptx"] and compiled.asm["cubin"]

    count = 0
    for arch in (80, 90):
        for dtype in ("fp32", "fp64"):
            for update_h in (True, False):  # False: a projected cell (h updated after the projection)
                lstm = dict(HAS_PEEP=True, HAS_UPDATES=True, UPDATE_H=update_h, BLOCK_B=4, BLOCK_H=128)
                rows = dict(HAS_PEEP=True, HAS_UPDATES=True, UPDATE_H=update_h, BLOCK_B=2, BLOCK_H=256)
                build(K.lstm_forward_step, dict(lstm, HAS_REC=True, CARRIED=update_h), dtype, arch)
                build(K.lstm_backward_step, dict(lstm, HAS_GPREV=True), dtype, arch)
                build(K.ln_lstm_forward_step, dict(rows, eps_hh=1e-5, eps_c=1e-5, HAS_REC=True, CARRIED=update_h),
                      dtype, arch)
                build(K.ln_lstm_backward_step, dict(rows, HAS_GPREV=True), dtype, arch)
                count += 4
            gru = dict(HAS_UPDATES=True, BLOCK_B=4, BLOCK_H=128)
            build(K.gru_forward_step, dict(gru, HAS_REC=True), dtype, arch)
            build(K.gru_backward_step, dict(gru, HAS_GPREV=True), dtype, arch)
            count += 2
    print("compiled", count)
""")


def test_every_kernel_compiles_for_sm80_and_sm90_in_float32_and_float64(tmp_path) -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_CACHE_DIR": str(tmp_path / "cache"),
           "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode and "ptxas" in done.stderr and "No such file" in done.stderr:
        pytest.skip("this triton build ships no ptxas")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("compiled 40"), done.stdout
