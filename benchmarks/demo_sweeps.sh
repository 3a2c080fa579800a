#!/usr/bin/env bash
# The demo preset's choices, one stage at a time, read on the validation split.
#
#   bash benchmarks/demo_sweeps.sh BASE OUT
#
# BASE: a finished `simclrv2 pipeline` run of the preset as it is (its pretrain export, teachers
# and label files are reused); OUT: a folder for the sweeps' runs. Each line varies one setting of
# one stage against BASE; a run that finished is skipped, so the script continues after a stop.
# Prints a line per run: its name and the validation top-1 (the test split is in each results.json,
# not read here: choices are made on validation).
set -euo pipefail
base=$1
out=$2
mkdir -p "$out"

run() {  # NAME COMMAND...: run a stage into OUT/NAME unless it finished there
  local name=$1
  shift
  if [[ ! -f $out/$name/results.json ]]; then
    python -m simclrv2 "$@" --out "$out/$name" >"$out/$name.log" 2>&1
  fi
  python - "$out/$name/results.json" "$name" <<'EOF'
import json, sys
scores = json.load(open(sys.argv[1]))
validation = scores["splits"]["validation"] if "splits" in scores else scores["validation"]
top1 = validation.get("top1", validation.get("knn_top1"))
print(f"{sys.argv[2]:<32} validation top1 {top1:.2f}", flush=True)
EOF
}

pre=$base/pretrain/model
for fraction in 1% 10%; do
  labels=$base/labels-$fraction.txt
  for lr in 0.025 0.1 0.2; do
    run "finetune-$fraction-lr$lr" finetune --init "$pre" --labels "$labels" finetune.base_lr=$lr
  done
  run "finetune-$fraction-e50" finetune --init "$pre" --labels "$labels" finetune.epochs=50
  for lr in 0.4 1.6; do
    run "supervised-$fraction-lr$lr" finetune --labels "$labels" supervised.base_lr=$lr
  done
  run "supervised-$fraction-e50" finetune --labels "$labels" finetune.epochs=50
  run "distill-$fraction-e10" distill --teacher "$base/finetune-$fraction/model" distill.epochs=10
done

# Pretraining's settings: each pretrains anew, then fine-tunes at 1% (the kNN top-1 is printed
# for the pretraining, the fine-tuned top-1 for its fine-tuning).
for variant in augment.brightness=v2 pretrain.epochs=20 pretrain.base_lr=1.0; do
  name=pretrain-${variant#*.}
  run "$name" pretrain "$variant"
  run "$name-finetune-1%" finetune --init "$out/$name/model" --labels "$base/labels-1%.txt" "$variant"
done
