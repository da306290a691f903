#!/usr/bin/env bash
# Device wrapper for scripts/bench_gpu_finetune.py (issue 3): run on the GPU machine from the repo root
# with .gpu_carry carried (the fp16 copy of all-MiniLM-L6-v2 in .gpu_carry/model and the PyARMViz wheel in
# .gpu_carry/cache). Results: $OUT/gpu_bench.json and $OUT/log.txt (./.gpu_carry/out without $OUT).
#   bash scripts/gpu_bench.sh [extra bench_gpu_finetune.py args]
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TQDM_DISABLE=1
export RECSYS_HOME="$PWD/.gpu_carry"                       # project_paths().cache -> .gpu_carry/cache
export RECSYS_PSEUDONYM_KEY="benchmark-key-not-a-secret"   # bench_quality.py's key: the same split
export RECSYS_BENCH_MODEL="${RECSYS_BENCH_MODEL:-$PWD/.gpu_carry/model}"
OUTDIR="${OUT:-$PWD/.gpu_carry/out}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python3}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import sys, torch, transformers, sentence_transformers as st; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'sentence-transformers', st.__version__)"
  "$PY" scripts/bench_gpu_finetune.py "$@"
} 2>&1 | tee "$OUTDIR/log.txt"
exit "${PIPESTATUS[0]}"
