#!/usr/bin/env bash
# Train the toyfaces StyleGAN2 (`toyfaces-stylegan`) and its wp encoder, evaluate it, and collect
# weights, sample grids and figures under $OUT. Meant for one GPU (about 8 minutes on an H200);
# SMOKE=1 runs the same chain on the CPU with tiny settings in a few minutes, to check it end to end.
#
#   OUT=/tmp/out benchmarks/train_toyfaces_stylegan.sh                 # GPU, distillation route
#   OUT=/tmp/out ROUTE=both benchmarks/train_toyfaces_stylegan.sh      # + the adversarial route
#   OUT=/tmp/out SMOKE=1 benchmarks/train_toyfaces_stylegan.sh         # CPU smoke test
#
# Routes:
#   distill      `tlgan train distill --arch stylegan2`: the student is fitted to the renderer's images
#                of the same z (L1 + edge L1 + classifier features), so the renderer's true axes hold
#                for it; the route the bundled DCGAN took.
#   adversarial  `tlgan train generator --arch stylegan2` on exported renders (R1, EMA, mixing).
# Each stage resumes from its checkpoint when the script is run again with the same WORK.
# The step counts of the two training stages are fitted to time budgets (DISTILL_SECONDS,
# ADV_SECONDS) from a short probe run, capped at DISTILL_STEPS / ADV_STEPS. DISTILL_LR (2e-3), BATCH (64),
# CHANNEL_BASE, CHANNEL_MAX, W_DIM, MAPPING_LAYERS, ENCODER_STEPS and EVAL_N override the defaults.
set -euo pipefail

: "${OUT:?set OUT to the output folder}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
ROUTE=${ROUTE:-distill}
# Checkpoints, exported data and probes go to WORK; OUT receives only weights, grids and JSON.
WORK=${WORK:-${TMPDIR:-/tmp}/toyfaces-stylegan}
mkdir -p "$OUT" "$WORK"

tlgan() { "$PY" -c "from tlgan.cli import main; main()" "$@"; }
stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$OUT/timings.txt"; }
json_get() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
# Steps that fit in $2 seconds at the probe's seconds per step ($1 = its JSON), at most $3, at least 1.
fit_steps() {
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1]))['seconds_per_step']; \
print(max(1, min(int(sys.argv[3]), int(float(sys.argv[2]) / s))))" "$1" "$2" "$3"
}

if [[ "${SMOKE:-0}" == 1 ]]; then
    DEVICE=${DEVICE:-cpu}
    SIZES=(--channel-base 256 --channel-max 16 --w-dim 32 --mapping-layers 2)
    BATCH=${BATCH:-4}; PROBE=2; DISTILL_STEPS=${DISTILL_STEPS:-6}; DISTILL_SECONDS=${DISTILL_SECONDS:-600}
    ENCODER_STEPS=${ENCODER_STEPS:-4}; ADV_STEPS=${ADV_STEPS:-4}; ADV_SECONDS=${ADV_SECONDS:-600}
    EXPORT_N=${EXPORT_N:-64}; EVAL_N=${EVAL_N:-32}; EVERY=2
else
    DEVICE=${DEVICE:-cuda}
    SIZES=(--channel-base "${CHANNEL_BASE:-1024}" --channel-max "${CHANNEL_MAX:-128}" --w-dim "${W_DIM:-256}"
           --mapping-layers "${MAPPING_LAYERS:-4}")
    BATCH=${BATCH:-64}; PROBE=${PROBE:-30}; DISTILL_STEPS=${DISTILL_STEPS:-6000}; DISTILL_SECONDS=${DISTILL_SECONDS:-240}
    ENCODER_STEPS=${ENCODER_STEPS:-1500}; ADV_STEPS=${ADV_STEPS:-20000}; ADV_SECONDS=${ADV_SECONDS:-300}
    EXPORT_N=${EXPORT_N:-20000}; EVAL_N=${EVAL_N:-2000}; EVERY=500
fi
"$PY" -c "import torch, tlgan; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), tlgan.__file__)" \
    | tee "$OUT/environment.txt"
if [[ "$DEVICE" == cuda* ]]; then nvidia-smi --query-gpu=name,memory.total --format=csv >> "$OUT/environment.txt" || true; fi

encoder_and_eval() {  # $1 = generator folder, $2 = label
    stamp "encoder $2: start"
    tlgan train encoder --generator "$1" --out "$1" --space wp --steps "$ENCODER_STEPS" --batch-size 32 \
        --checkpoint-every "$EVERY" --device "$DEVICE" --resume --json > "$OUT/encoder-$2.json"
    stamp "encoder $2: done"
    tlgan toyfaces eval --generator "$1" --n "$EVAL_N" --device "$DEVICE" --json > "$OUT/eval-$2.json"
    stamp "eval $2: done"
    mkdir -p "$OUT/$2"
    cp "$1"/model.json "$1"/model.safetensors "$1"/encoder.json "$1"/encoder.safetensors "$OUT/$2/"
    last=$(ls "$1"/samples/*.png | sort | tail -n 1)
    cp "$last" "$OUT/samples-$2.png"
    du -b "$OUT/$2"/*.safetensors | tee -a "$OUT/timings.txt"
}

# One route: a short probe run sizes the training to $3 seconds (at most $4 steps), then
# `tlgan train $2` with the options that follow trains, resumably, and the encoder and eval run.
train_route() {  # $1 = route name, $2 = train subcommand, $3 = seconds, $4 = most steps, then options
    local name=$1 subcommand=$2 seconds=$3 most=$4 steps
    shift 4
    if [[ ! -f "$WORK/$name-steps.txt" ]]; then
        stamp "$name probe: start"
        rm -rf "$WORK/probe-$name"
        tlgan train "$subcommand" "$@" --out "$WORK/probe-$name" --steps "$PROBE" \
            --checkpoint-every 1000000 --sample-every 1000000 > "$WORK/probe-$name.json"
        fit_steps "$WORK/probe-$name.json" "$seconds" "$most" > "$WORK/$name-steps.txt"
        cp "$WORK/probe-$name.json" "$OUT/"
    fi
    steps=$(cat "$WORK/$name-steps.txt")
    stamp "$name: $steps steps"
    tlgan train "$subcommand" "$@" --out "$WORK/$name" --steps "$steps" --name toyfaces-stylegan \
        --checkpoint-every "$EVERY" --sample-every "$EVERY" --resume > "$OUT/$name.json"
    stamp "$name: done ($(json_get "$OUT/$name.json" seconds_per_step) s/step)"
    encoder_and_eval "$WORK/$name" "toyfaces-stylegan-$name"
}

if [[ "$ROUTE" == distill || "$ROUTE" == both ]]; then
    train_route distill distill "$DISTILL_SECONDS" "$DISTILL_STEPS" \
        --teacher toyfaces-render --classifier toyfaces-classifier --arch stylegan2 "${SIZES[@]}" \
        --batch-size "$BATCH" --lr "${DISTILL_LR:-2e-3}" --edge-weight 0.5 --feature-weight 0.1 --device "$DEVICE" --json
fi

if [[ "$ROUTE" == adversarial || "$ROUTE" == both ]]; then
    stamp "export $EXPORT_N renders: start"
    tlgan toyfaces export --out "$WORK/data" -n "$EXPORT_N" --seed 0
    stamp "export: done"
    train_route adversarial generator "$ADV_SECONDS" "$ADV_STEPS" \
        --data "$WORK/data" --arch stylegan2 "${SIZES[@]}" --resolution 64 --z-dim 512 --batch-size "$BATCH" \
        --device "$DEVICE" --json
fi
rm -rf "$WORK/probe-distill" "$WORK/probe-adversarial"
stamp "all done"
