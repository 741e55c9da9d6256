#!/usr/bin/env bash
# benchmarks/gpu_check.sh: a few QLoRA steps of `finetune run` on a CUDA GPU (the GPU path:
# NF4 + double quantization, bf16 compute (fp16 without bf16), paged 8-bit AdamW). Prints the
# chosen device/precision/optimizer, peak GPU memory and tokens/s. Installs nothing.
#
#   bash benchmarks/gpu_check.sh            # uses .venv/bin/python if present, else python3
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA GPU (torch %s, cuda build %s)" % (torch.__version__, torch.version.cuda))
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| bf16:", torch.cuda.is_bf16_supported())
import bitsandbytes, peft, transformers
print("bitsandbytes", bitsandbytes.__version__, "| peft", peft.__version__, "| transformers", transformers.__version__)
PY
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$PY" -c "from finetune.cli import main; main()" run --config demo --output "$OUT/run" --fresh \
  model.device=cuda train.optimizer=auto train.max_steps=8 train.checkpoint_every=4 train.epochs=2 \
  samples.count=4 | tee "$OUT/log.txt"
grep -E "^(Device|Optimizer|Model):" "$OUT/log.txt" || true
"$PY" - "$OUT/run/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if r["kind"] == "step"]
summary = rows[-1]
tok = sum(r["tokens"] for r in steps[1:]); sec = sum(r["seconds"] for r in steps[1:])  # skip warm-up step
print(f"steps: {len(steps)}  loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}")
print(f"tokens/s (steps 2..): {tok / max(sec, 1e-9):.0f}")
print(f"peak GPU memory: {summary.get('peak_gpu_mb', 'n/a')} MB  (estimate: {summary['estimate']})")
print(f"peak RSS: {summary['peak_rss_mb']} MB  eval loss {summary['first_eval_loss']} -> {summary['best_eval_loss']}")
PY
