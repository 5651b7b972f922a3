#!/usr/bin/env bash
# One GPU session's worth of benchmarks, as one script (a GPU is lent for minutes, not hours).
#
#   bash benchmarks/gpu_run.sh MNIST_FOLDER OUT_FOLDER [TRAIN_MINUTES [DEADLINE_SECONDS]]
#
# On the GPU: the Triton kernel and CUDA-graph tests, then pixel and permuted MNIST (benchmarks/bench_image_configs.py: three configurations
# sharing the GPU under one wall-clock training budget), then every recurrent path against cuDNN
# (benchmarks/bench_speed.py --device cuda --write). Meanwhile, on the machine's spare CPU cores:
# the selective-copy memory table (benchmarks/bench_memory.py, one process per cell, 2 threads
# each). Everything ends before DEADLINE_SECONDS (default 560). rnnkit runs from src/ through
# PYTHONPATH: the machine needs torch, lightning, torchmetrics, typer, rich, safetensors, pyyaml and
# matplotlib, nothing else.
#
# GPU_RUN_PARTS (default "triton memory image speed") picks the parts, e.g. GPU_RUN_PARTS="triton speed".
# GPU_RUN_SPEED_ONLY=REGEX times only the matching paths and their torch.nn baselines, then profiles one training
# step of each (bench_speed.py --only REGEX --profile; RESULTS.md is left as it is), e.g. GPU_RUN_SPEED_ONLY=triton.
# GPU_RUN_IMAGE=permuted trains only the permuted-MNIST BiLSTM, alone on the GPU (91.63% in 4.4 minutes, then 91.76%
# in 7.3 when train.lr_decay cut the rate after every wobble of dev accuracy; with train.lr_decay_patience=3, as the
# runs now use, 93.00% in 8.3 minutes, RESULTS.md run E; hidden 256, GPU_RUN_SET=model.hidden_size=256, reached only
# 91.47% in 8.2 minutes: its epochs took 4.2x as long on cuDNN, 18 in the budget), e.g.
#   GPU_RUN_PARTS="image" GPU_RUN_IMAGE=permuted bash benchmarks/gpu_run.sh .mnist /tmp/g 8.5 580
#
# Dry run on a CPU (checks the script, figures mean nothing):
#   GPU_RUN_DEVICE=cpu GPU_RUN_SET=model.hidden_size=8 GPU_RUN_MEMORY_STEPS=20 \
#     bash benchmarks/gpu_run.sh builtin:digits /tmp/gpu-dry 0.1 200
set -u
mnist=${1:?MNIST folder}; out=${2:?output folder}; minutes=${3:-6}; deadline=${4:-560}
device=${GPU_RUN_DEVICE:-cuda}
here=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$here/src:$here/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
GPU_RUN_DEVICE=$device python3 - <<'PY' || { echo "preflight failed"; exit 1; }
import os
import torch, lightning, torchmetrics, typer, rich, safetensors, yaml, matplotlib  # noqa: F401
import rnnkit.cli  # noqa: F401
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "", "lightning", lightning.__version__, flush=True)
assert os.environ["GPU_RUN_DEVICE"] != "cuda" or torch.cuda.is_available(), "no CUDA device"
PY

parts=" ${GPU_RUN_PARTS:-triton memory image speed} "
want() { [[ $parts == *" $1 "* ]]; }

triton_pid=
if want triton; then  # the Triton kernels against the reference scan, compiled for this GPU
  ( cd "$here" && timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_triton_engine.py \
      tests/test_gru_engine.py tests/test_fast_engine.py tests/test_step_matmul.py ) \
    >"$out/triton_tests.log" 2>&1 &
  triton_pid=$!
  # alone unless images train meanwhile (the tests are small; compiling them keeps CPU cores busy, not the GPU)
  want image || { wait $triton_pid; triton_pid=; }
  [[ -z $triton_pid ]] && tail -n 3 "$out/triton_tests.log"
fi

memory_pids=()
want memory && for cell in rnn lstm gru; do
  timeout $(( deadline - $(elapsed) - 40 )) python3 "$here/benchmarks/bench_memory.py" --tasks selective-copy \
    --lengths 30,60,120 --cells "$cell" --budget-steps "${GPU_RUN_MEMORY_STEPS:-2000}" --seeds 1 --threads 2 \
    --out "$out/memory-$cell" >"$out/memory-$cell.log" 2>&1 &
  memory_pids+=($!)
done

sets=()
[[ -n ${GPU_RUN_SET:-} ]] && sets=(--set "$GPU_RUN_SET")
# training ends up to a minute after its budget (start-up, test scoring): leave that and time for speed
reserve=150
[[ -n ${GPU_RUN_SPEED_ONLY:-} ]] && reserve=110
want speed || reserve=60
fit=$(python3 -c "print(max(0.5, min($minutes, ($deadline - $(elapsed) - $reserve) / 60)))")
[[ $fit != "$minutes" ]] && echo "image budget cut from $minutes to $fit min to end by the deadline"
minutes=$fit
image_runs=(--parallel 3 --run 'pixels LSTM=data.sequence=pixels'
            --run 'pixels BiLSTM max-pool=data.sequence=pixels,model.bidirectional=true,model.pooling=max'
            --run 'permuted BiLSTM max-pool=data.sequence=permuted,model.bidirectional=true,model.pooling=max')
[[ ${GPU_RUN_IMAGE:-all} == permuted ]] && image_runs=(--parallel 1
  --run 'permuted BiLSTM max-pool=data.sequence=permuted,model.bidirectional=true,model.pooling=max')
want image && python3 "$here/benchmarks/bench_image_configs.py" --data "$mnist" --minutes "$minutes" \
  --out "$out/image" "${sets[@]}" "${image_runs[@]}" 2>&1 | tee "$out/image.log"
if want image && ! grep -q "selected on dev" "$out/image/bench_image_configs.md" 2>/dev/null; then
  echo "image runs failed after $(elapsed) s: stopping"
  kill "${memory_pids[@]}" 2>/dev/null
  tail -n 30 "$out"/image/run*.stderr
  exit 1
fi

if [[ -n $triton_pid ]]; then wait $triton_pid; tail -n 3 "$out/triton_tests.log"; fi

left=$(( deadline - $(elapsed) - 20 ))
if want speed && (( left > 30 )); then
  speed=(--device "$device" --rounds 3)
  [[ $device == cpu ]] && speed=(--quick --no-keras)
  if [[ -n ${GPU_RUN_SPEED_ONLY:-} ]]; then speed+=(--only "$GPU_RUN_SPEED_ONLY" --profile); else speed+=(--write); fi
  timeout "$left" python3 "$here/benchmarks/bench_speed.py" "${speed[@]}" 2>&1 | tee "$out/speed.log"
  [[ -z ${GPU_RUN_SPEED_ONLY:-} ]] && cp "$here/benchmarks/RESULTS.md" "$out/RESULTS.md"
elif want speed; then
  echo "speed part skipped: only $left s left before the deadline"
fi
(( ${#memory_pids[@]} )) && wait "${memory_pids[@]}"
cat "$out"/memory-*/selective-copy.md 2>/dev/null
echo "total $(elapsed) s"
