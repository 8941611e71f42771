#!/usr/bin/env bash
# `seppo bench speed` on a CUDA machine: the SD1.5 architecture (random weights from its configs, no
# download) at 512 px (64x64 latents), bf16, project vs the public way; writes the JSON to $OUT (or ./).
#
# The device image has PyTorch + CUDA, transformers, accelerate, safetensors, pyyaml, psutil and
# matplotlib, but not diffusers or pydantic; their wheels travel in .whl/ (ignored by git). Make them
# here once (Python 3.12, manylinux x86-64, no dependencies: the rest is on the device):
#
#   bash scripts/gpu_bench.sh --fetch-wheels
#
# then run on the device with .whl carried (repository root as working directory):
#
#   bash scripts/gpu_bench.sh                  # sd15, 1 timed round per side, ablations channels_last,adamw_fused
#   REPEATS=2 ABLATIONS=channels_last,adamw_fused,compile bash scripts/gpu_bench.sh
#
# Disk: a full-fine-tuning SD1.5 round commits ~10 GB (UNet 3.4 GB + AdamW state 6.9 GB) to the bank and
# copies it into the checkpoint cache; the cache goes to /dev/shm when it has room, so 64 GB of disk hold
# the warm-up + REPEATS rounds of both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(diffusers==0.42.1 peft==0.21.2 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)

if [ "${1:-}" = "--fetch-wheels" ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
  ls -la .whl
  exit 0
fi

OUT="${OUT:-.}"
WORK="${WORK:-/tmp/seppo-bench-speed}"
MODELS="${MODELS:-sd15}"
REPEATS="${REPEATS:-1}"
ABLATIONS="${ABLATIONS:-channels_last,adamw_fused}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
df -h /tmp /dev/shm | cat

shm_free_gb=$(df -BG --output=avail /dev/shm | tail -1 | tr -dc 0-9)
if [ "${shm_free_gb:-0}" -ge 40 ]; then  # the SD1.5 checkpoint cache in RAM, the bank on disk
  for m in ${MODELS//,/ }; do
    mkdir -p "/dev/shm/seppo-cache-$m" "$WORK/$m/project"
    [ -e "$WORK/$m/project/cache" ] || ln -s "/dev/shm/seppo-cache-$m" "$WORK/$m/project/cache"
  done
fi

python3 -m seppo_lib.cli bench speed --device cuda --precision bf16 --models "$MODELS" --repeats "$REPEATS" \
  --ablations "$ABLATIONS" --workdir "$WORK" --out "$OUT/cuda-$MODELS.json" 2>&1 | grep -v "it/s\]"
du -sh "$WORK" /dev/shm/seppo-cache-* 2>/dev/null | cat
