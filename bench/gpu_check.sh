#!/usr/bin/env bash
# The GPU figures of bench/README.md in one go (meant to take under 8 minutes on one H100), written as ONE
# markdown table (default bench/results/gpu_check.md). Every script runs offline (generated media).
#
#   bash bench/gpu_check.sh [--out FILE]            # on a GPU node (--device cuda)
#   bash bench/gpu_check.sh --cpu [--out FILE]      # smoke run on CPU with tiny sizes (about a minute)
#
# Each row: the script, its exact command, exit status, wall seconds and the lines it printed with figures.
# A script that fails or runs past its time limit gets its row (status != 0) and the next one still runs.
set -u
cd "$(dirname "$0")/.."
MODE=gpu
OUT=bench/results/gpu_check.md
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: bash bench/gpu_check.sh [--cpu] [--out FILE]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
if [ "$MODE" = gpu ]; then
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; use --cpu for the CPU smoke run" >&2
    exit 2
  fi
  CORES=$(nproc)
  RUNS=(
    "encoder_speed|90|$PY bench/encoder_speed.py --device cuda --batch 64 --iters 10 --paper-batch 30 --paper-iters 5"
    "crop_speed|180|$PY bench/crop_speed.py --device cuda --batch 128 --frames 240 --videos 32 --video-frames 104 --video-size 160 --workers 1,auto"
    "epoch_speed (paper size)|150|$PY bench/epoch_speed.py --device cuda --size paper --batch 30 --videos 48 --windows 2 --epochs 3 --steps 5 --workers 0,$CORES"
    "relation_cell|60|$PY bench/relation_cell.py --device cuda --repeats 10"
  )
else
  RUNS=(
    "encoder_speed|120|$PY bench/encoder_speed.py --device cpu --batch 1 --iters 1 --skip-paper"
    "crop_speed|120|$PY bench/crop_speed.py --device cpu --tiny"
    "epoch_speed|120|$PY bench/epoch_speed.py --device cpu --tiny --workers 0,2"
    "relation_cell|60|$PY bench/relation_cell.py --device cpu --batch 2 --in 16 --hidden 8 --repeats 1"
  )
fi
mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp "${OUT}.tmpXXXX")
DEVICE=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')")
{
  echo "# bench/gpu_check.sh ($MODE) on $DEVICE, $(nproc) cores, torch $($PY -c 'import torch; print(torch.__version__)'), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "| script | command | status | seconds | figures |"
  echo "|---|---|---|---|---|"
} > "$TMP"
FAILED=0
for run in "${RUNS[@]}"; do
  IFS='|' read -r name limit cmd <<< "$run"
  echo "== $name: $cmd (limit ${limit}s)" >&2
  LOG=$(mktemp)
  start=$(date +%s)
  timeout "$limit" $cmd > "$LOG" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  [ $rc -ne 0 ] && FAILED=1
  [ $rc -eq 124 ] && echo "(stopped after ${limit} s)" >> "$LOG"
  # the lines with figures: per-path rates, totals, ratios, tables; '|' escaped for markdown
  figs=$(grep -E "clips/s|frames/s|windows/s|videos/s| ms |ratio|agreement|STAGE|DETECTOR|^read|^to_input|^compute|^validate|^epoch|Error|error|FAILED|stopped" "$LOG" \
         | grep -v "it/s" | sed -e 's/|/\\|/g' -e 's/  */ /g' | paste -sd'\n' - | sed ':a;N;$!ba;s/\n/<br>/g')
  echo "| $name | \`$cmd\` | $rc | $secs | ${figs:-(no output)} |" >> "$TMP"
  cat "$LOG" >&2
  rm -f "$LOG"
done
mv "$TMP" "$OUT"
echo "gpu_check: wrote $OUT" >&2
exit $FAILED
