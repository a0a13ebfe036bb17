#!/usr/bin/env bash
# The demo on built-in data. By default it serves the committed release models (release-models/: trained
# by scripts/train_release_models.sh, provenance in each manifest.json) at once. DEMO_TRAIN=1 trains small
# GANs from scratch instead (about 10 minutes on 2 CPU cores), exports them to ONNX and serves those.
# Settings (environment): DEMO_TRAIN=1, DEMO_OUT (default demo-out), DEMO_SERVE=0 to stop before serving,
# DEMO_MODELS (the models served without DEMO_TRAIN; default release-models), GAN_PORT (default 8000).
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
PORT=${GAN_PORT:-8000}
mkdir -p "$OUT"
start=$(date +%s)

# one real image of the built-in data set, to send to /translate
python -c "from PIL import Image; from trainer.data.shapes import render, sample_parameters; \
Image.fromarray(render(sample_parameters(0, 3), 128)).save('$OUT/shape.png')"

if [ "${DEMO_TRAIN:-0}" != "1" ]; then
    MODELS=${DEMO_MODELS:-release-models}
    echo "== serving the release models in $MODELS (DEMO_TRAIN=1 make demo trains them from scratch instead)"
    for manifest in "$MODELS"/*/manifest.json; do
        python -c "import json, sys; m = json.load(open(sys.argv[1])); p = m['provenance']; \
print(f\"  {m['name']:9s} step {p['training_step']:>5}  {p.get('training_command', '')}\")" "$manifest"
    done
else
MODELS="$OUT/models"

echo "== DCGAN on shapes, 32x32 (reference widths)"
gan-train dcgan --data shapes --image-size 32 --steps 1200 \
    --sample-every 300 --checkpoint-every 600 --out "$OUT/runs/dcgan"
echo "== LSGAN on shapes, 32x32 (paper layout, reduced widths)"
gan-train lsgan --data shapes --image-size 32 --ngf 64 --ndf 32 --steps 800 \
    --sample-every 200 --checkpoint-every 400 --out "$OUT/runs/lsgan"
echo "== PGGAN on shapes, grown 4x4 -> 32x32 (reduced widths, short phases)"
gan-train pggan --data shapes --image-size 32 --fmap-base 128 --fmap-max 32 --latent-dim 64 --batch-size 16 \
    --fade-images 3200 --stable-images 6400 --ema-beta 0.99 --steps 2200 \
    --sample-every 400 --checkpoint-every 1100 --out "$OUT/runs/pggan"

echo "== StarGAN on shapes: translate the shape's colour (32x32, reduced widths)"
gan-train stargan --data shapes:2000 --image-size 32 --g-conv-dim 16 --d-conv-dim 16 --g-repeat-num 3 \
    --steps 1200 --num-iters 1200 --num-iters-decay 200 --eval-every 1200 --eval-images 200 \
    --sample-every 600 --checkpoint-every 1200 --out "$OUT/runs/stargan"
gan-eval-stargan "$OUT/runs/stargan" --png "$OUT/stargan_translation.png" --png-images 1

echo "== SRResNet x4 on the photographs bundled with scikit-image/scikit-learn (short: shows the pipeline)"
gan-train srresnet --data photos --blocks 4 --channels 32 --crop-size 64 --lr 1e-3 --lr-drop-step 200 \
    --steps 300 --eval-every 150 --sample-every 150 --checkpoint-every 300 --out "$OUT/runs/srresnet"

echo "== export to ONNX (verified against PyTorch)"
for arch in dcgan lsgan pggan stargan srresnet; do
    gan-export "$OUT/runs/$arch" --out "$OUT/models" --name "$arch"
done
gan-eval-sr "$OUT/models/srresnet" --data photos --side-by-side "$OUT/srresnet_side_by_side.png"

echo "== sample grids"
for arch in dcgan lsgan pggan stargan; do
    ls -1 "$OUT/runs/$arch/samples/" | tail -n 1 | sed "s|^|  $OUT/runs/$arch/samples/|"
done
echo "demo trained and exported in $(( $(date +%s) - start )) s"
fi

if [ "${DEMO_SERVE:-1}" = "0" ]; then
    exit 0
fi
cat <<MSG
== serving $MODELS on http://127.0.0.1:$PORT  (Ctrl-C to stop)
Open the demo page in a browser: http://127.0.0.1:$PORT/
Or try the API, once it says it is ready:
  curl -s -X POST http://127.0.0.1:$PORT/generate -H 'Content-Type: application/json' \\
       -H 'Accept: image/png' -d '{"model": "dcgan", "num_images": 16, "seed": 42}' -o grid.png
  curl -s -X POST http://127.0.0.1:$PORT/translate -F image=@$OUT/shape.png -F attributes=colour_blue \\
       -o translated.png      # any PNG/JPEG/WebP works; it is resized and centre-cropped to the model's size
  curl -s -X POST http://127.0.0.1:$PORT/super-resolve -F image=@grid.png -o grid_x4.png
  curl -s http://127.0.0.1:$PORT/models
  curl -s http://127.0.0.1:$PORT/metrics | grep '^gan_'
Quality of these models: docs/quality.md (gan-eval $MODELS/dcgan --data shapes; gan-eval-sr $MODELS/srresnet)
MSG
exec gan-serve --model-dir "$MODELS" --host 127.0.0.1 --port "$PORT"
