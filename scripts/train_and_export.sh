#!/usr/bin/env bash
# Train one GAN and export it into a model repository: the job of the compose `trainer` service
# (`docker compose --profile train run --rm trainer`), installed in the trainer image as train-and-export.
#
# Settings (environment):
#   TRAIN_ARCH   architecture for gan-train (dcgan, lsgan, pggan, srresnet, srgan, stargan); default dcgan
#   TRAIN_ARGS   gan-train options, split on spaces (no quoting); default: the demo's DCGAN on the built-in
#                shapes data, "--data shapes --image-size 32 --steps 1200" (set it for any other ARCH)
#   MODEL_NAME   model (and run folder) name; default TRAIN_ARCH
#   EXPORT_ARGS  extra gan-export options, e.g. "--fp16"
#   RUNS_DIR     where run folders live (default /runs in the image, runs/ elsewhere)
#   MODEL_DIR    the model repository the service reads (default /models in the image, models/ elsewhere)
#
# Re-running continues the run (--resume) when it has a checkpoint: --steps is the total, so the same
# command trains nothing more and only re-exports, and a larger --steps trains on from where it stopped.
# The service loads models at start-up: restart it afterwards (docker compose restart gan).
set -euo pipefail

arch=${TRAIN_ARCH:-dcgan}
name=${MODEL_NAME:-$arch}
runs=${RUNS_DIR:-runs}
models=${MODEL_DIR:-models}
read -r -a train_args <<< "${TRAIN_ARGS:---data shapes --image-size 32 --steps 1200}"
read -r -a export_args <<< "${EXPORT_ARGS:-}"
run="$runs/$name"

for dir in "$runs" "$models"; do
    mkdir -p "$dir" 2>/dev/null || true
    if [ ! -w "$dir" ]; then
        echo "train-and-export: $dir is not writable by uid $(id -u); give it to that user, e.g." >&2
        echo "  docker compose --profile train run --rm --user root trainer chown -R $(id -u):$(id -g) $dir" >&2
        exit 2
    fi
done

resume=()
if [ -e "$run/checkpoints/latest.pt" ]; then
    echo "== $run has a checkpoint: resuming"
    resume=(--resume)
fi

echo "== gan-train $arch ${train_args[*]} --out $run ${resume[*]}"
gan-train "$arch" "${train_args[@]}" --out "$run" --no-progress "${resume[@]}"

echo "== gan-export $run --out $models --name $name ${export_args[*]}"
gan-export "$run" --out "$models" --name "$name" "${export_args[@]}"

echo "== $models/$name is ready; restart the service to load it (docker compose restart gan)"
