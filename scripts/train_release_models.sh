#!/usr/bin/env bash
# Train and export the release models that `make demo` serves from release-models/ (committed).
#
#   scripts/train_release_models.sh [MODEL ...]     MODEL: dcgan lsgan pggan stargan srresnet srgan (default: all)
#
# Settings (environment):
#   RELEASE_RUNS    run folders (default runs/release; gitignored)
#   RELEASE_MODELS  the model repository written (default release-models)
#   OMP_NUM_THREADS threads per training process (default 1: the step counts below were chosen for, and
#                   timed on, a shared 2-core CPU with two trainings side by side)
#
# Each model is trained to the step count below and exported; gan-export verifies ONNX against PyTorch
# and records in manifest.json the checkpoint's sha256, the step, and the gan-train command that reproduces
# the checkpoint (provenance.training_command). A run folder that already has a checkpoint is resumed
# (--steps is the total), so re-running only re-exports and a larger count trains on. SRGAN starts from the
# SRResNet run, so srresnet must come first. The settings and why they depart from the papers (widths,
# learning rates, step counts): docs/quality.md, "Release models". Their quality: scripts/quality_report.py.
set -euo pipefail

runs=${RELEASE_RUNS:-runs/release}
models=${RELEASE_MODELS:-release-models}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# step counts of the committed models: where each run was stopped (at a checkpoint) when the two-hour
# budget on 2 CPU cores shared with other people's test runs ran out, not convergence; docs/quality.md,
# "How they were trained". A larger count resumes the run and trains on (StarGAN's learning-rate schedule
# is fixed by STARGAN_ITERS, DCGAN's by its decay steps, PGGAN's growth by its image counts, so stopping
# early changes none of them; past DCGAN's decay end its learning rates are 0).
DCGAN_STEPS=${DCGAN_STEPS:-8000}  # the end of its learning-rate decay (from step 5000)
LSGAN_STEPS=${LSGAN_STEPS:-13000}
PGGAN_STEPS=${PGGAN_STEPS:-26000}
STARGAN_STEPS=${STARGAN_STEPS:-10000}
STARGAN_ITERS=${STARGAN_ITERS:-10000}  # the lr schedule: constant, then linearly to 0 over the last quarter
SRRESNET_STEPS=${SRRESNET_STEPS:-2500}
SRGAN_STEPS=${SRGAN_STEPS:-200}

common=(--sample-every 1000 --checkpoint-every 500 --keep-checkpoints 0 --no-progress)

train() {  # train NAME ARCH ARGS...: gan-train into $runs/NAME, resuming when it has a checkpoint
    local name=$1 arch=$2
    shift 2
    local resume=()
    [ -e "$runs/$name/checkpoints/latest.pt" ] && resume=(--resume)
    echo "== $(date -u +%H:%M:%S) gan-train $arch $* --out $runs/$name ${resume[*]}"
    gan-train "$arch" "$@" "${common[@]}" --out "$runs/$name" "${resume[@]}"
    echo "== $(date -u +%H:%M:%S) gan-export $runs/$name --out $models --name $name"
    gan-export "$runs/$name" --out "$models" --name "$name"
}

release() {
    case $1 in
    dcgan)  # the reference G width at 32x32, D at half width (as LSGAN's; the reference D won outright and G
            # collapsed after 3,000 steps), R1 (gamma 1, lazily every 4th step) against that collapse, and the
            # learning rates decayed linearly to 0 over steps 5,000-8,000, where FID had levelled at about 5;
            # served: an EMA of G (as PGGAN's G_ema; the reference serves G itself). docs/quality.md
        train dcgan dcgan --data shapes --image-size 32 --ndf 32 --ema-beta 0.995 --r1-gamma 1 --r1-every 4 \
            --lr-decay-start 5000 --lr-decay-end 8000 --steps "$DCGAN_STEPS" --eval-every 500 --eval-samples 2000 ;;
    lsgan)  # the paper's layout, widths reduced for CPU; served: an EMA of G (0.995: a short run)
        train lsgan lsgan --data shapes --image-size 32 --ngf 64 --ndf 32 --ema-beta 0.995 --steps "$LSGAN_STEPS" \
            --eval-every 500 --eval-samples 2000 ;;
    pggan)  # grown 4x4 -> 32x32 (at step 3,600), widths and phases reduced for CPU; the paper's EMA 0.999;
            # fmap 256/64 (64 channels to 16x16, 32 at 32x32): at 128/32 it levelled at FID 9 dropping triangles
        train pggan pggan --data shapes --image-size 32 --fmap-base 256 --fmap-max 64 --latent-dim 64 \
            --batch-size 16 --fade-images 6400 --stable-images 12800 --ema-beta 0.999 --steps "$PGGAN_STEPS" \
            --eval-every 1000 --eval-samples 2000 ;;
    stargan)  # recolour the shapes (colour domains), widths reduced for CPU; G every 2nd step (paper: 5th)
        train stargan stargan --data shapes:2000 --image-size 32 --g-conv-dim 16 --d-conv-dim 16 \
            --g-repeat-num 3 --n-critic 2 --steps "$STARGAN_STEPS" --num-iters "$STARGAN_ITERS" \
            --num-iters-decay $((STARGAN_ITERS / 4)) --eval-every 1000 --eval-images 200 ;;
    srresnet)  # a quarter of the paper's network; colour augmentation on (the photos default, see colour_augment)
        train srresnet srresnet --data photos --blocks 4 --channels 32 --crop-size 64 --lr 1e-3 \
            --lr-drop-step $((SRRESNET_STEPS * 4 / 5)) --steps "$SRRESNET_STEPS" --eval-every 250 ;;
    srgan)  # from the SRResNet; MSE content loss (VGG19 weights cannot be downloaded here); adversarial
            # weight 2e-4 (paper 1e-3, which shifted the colours: docs/quality.md, "SRGAN's colours")
        train srgan srgan --data photos --init-from "$runs/srresnet" --blocks 4 --channels 32 --crop-size 64 \
            --ndf 32 --d-dense 256 --content-loss mse --adversarial-weight 2e-4 --lr 1e-4 --lr-drop-step 0 \
            --steps "$SRGAN_STEPS" --eval-every 100 ;;
    *)
        echo "train_release_models: unknown model $1 (dcgan lsgan pggan stargan srresnet srgan)" >&2
        return 2 ;;
    esac
}

mkdir -p "$runs" "$models"
for model in "${@:-dcgan lsgan pggan stargan srresnet srgan}"; do
    for m in $model; do
        release "$m"
    done
done
echo "== release models in $models; their figures: python scripts/quality_report.py --release $models --write docs/quality.md"
