#!/usr/bin/env bash
# Everything issue 24 measures on a GPU, in one go, within about 10 minutes on one GPU: the main
# job on the GPU (`interp demo --device cuda`) and the three GPU benchmarks. Each step's stdout
# and stderr land in OUT, each benchmark's JSON line in OUT/<name>.json, and OUT/summary.json
# says which steps finished, in how many seconds, on which card.
#
#   benchmarks/gpu_check.sh [OUT]        (default OUT: benchmarks/out/gpu_check)
#
# Environment: DEVICE (default cuda), PYTHON (default .venv/bin/python, else python3), and
# per-step time limits in seconds: DEMO_S (240), SAE_S (180), CAPTURE_S (90), ATTRIBUTION_S (90).
# The anchors that need their own virtualenv (sparsify, circuit-tracer) are run only if that
# venv exists with a CUDA build of torch (benchmarks/.venvs/; the machine may be offline); a
# benchmark reports them as failed otherwise and still measures ours.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/out/gpu_check}
DEVICE=${DEVICE:-cuda}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1 || true
"$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))" > "$OUT/torch.txt" 2>&1
STATUS="$OUT/status.tsv"
: > "$STATUS"

step() {  # step NAME LIMIT_S COMMAND...: run it under a time limit, note exit code and seconds
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*" >&2
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=20 "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  local rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 0 ] && [ "$name" != demo ]; then tail -n 1 "$OUT/$name.out" > "$OUT/$name.json"; fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$STATUS"
  echo "   $name: exit $rc after ${dt}s" >&2
}

step demo "${DEMO_S:-240}" "$PYTHON" -m interp.cli demo --device "$DEVICE" \
  --workspace "$OUT/workspace"
step sae_train "${SAE_S:-180}" "$PYTHON" benchmarks/sae_train.py --device "$DEVICE" \
  --steps 60 --warmup 5 --pilot-steps 6
step capture "${CAPTURE_S:-90}" "$PYTHON" benchmarks/capture.py --device "$DEVICE" \
  --tokens 131072 --repeats 3 --budget-s 60
step attribution "${ATTRIBUTION_S:-90}" "$PYTHON" benchmarks/attribution.py --device "$DEVICE" \
  --repeats 2

"$PYTHON" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
steps = {}
for line in (out / "status.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    entry = {"exit_code": int(rc), "seconds": int(seconds)}
    js = out / f"{name}.json"
    if js.is_file():
        try:
            result = json.loads(js.read_text())
            entry["ratios"] = result.get("ratios")
            entry["meets_targets"] = result.get("meets_targets")
        except json.JSONDecodeError as e:
            entry["json_error"] = str(e)
    steps[name] = entry
summary = {"gpu": (out / "gpu.csv").read_text().strip(), "torch": (out / "torch.txt").read_text().strip(),
           "total_seconds": sum(s["seconds"] for s in steps.values()), "steps": steps}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
EOF
