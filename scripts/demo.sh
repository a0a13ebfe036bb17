#!/usr/bin/env bash
# The main job on built-in data: train small GANs, export them to ONNX, serve them on localhost.
# Settings (environment): DEMO_OUT (default demo-out), DEMO_SERVE=0 to stop after exporting,
# GAN_PORT (default 8000).
set -euo pipefail
OUT=${DEMO_OUT:-demo-out}
PORT=${GAN_PORT:-8000}
mkdir -p "$OUT"
start=$(date +%s)

echo "== DCGAN on shapes, 32x32"
gan-train dcgan --data shapes --image-size 32 --ngf 32 --ndf 32 --steps 800 \
    --sample-every 200 --checkpoint-every 400 --out "$OUT/runs/dcgan"
echo "== LSGAN on shapes, 32x32"
gan-train lsgan --data shapes --image-size 32 --ngf 64 --ndf 32 --steps 800 \
    --sample-every 200 --checkpoint-every 400 --out "$OUT/runs/lsgan"

echo "== export to ONNX (verified against PyTorch)"
gan-export "$OUT/runs/dcgan" --out "$OUT/models" --name dcgan
gan-export "$OUT/runs/lsgan" --out "$OUT/models" --name lsgan

echo "== sample grids"
for arch in dcgan lsgan; do
    ls -1 "$OUT/runs/$arch/samples/" | tail -n 1 | sed "s|^|  $OUT/runs/$arch/samples/|"
done
echo "demo trained and exported in $(( $(date +%s) - start )) s"

if [ "${DEMO_SERVE:-1}" = "0" ]; then
    exit 0
fi
cat <<MSG
== serving $OUT/models on http://127.0.0.1:$PORT  (Ctrl-C to stop)
Try, once it says it is ready:
  curl -s -X POST http://127.0.0.1:$PORT/generate -H 'Content-Type: application/json' \\
       -H 'Accept: image/png' -d '{"model": "dcgan", "num_images": 16, "seed": 42}' -o grid.png
  curl -s http://127.0.0.1:$PORT/models
  curl -s http://127.0.0.1:$PORT/metrics | grep '^gan_'
MSG
exec gan-serve --model-dir "$OUT/models" --host 127.0.0.1 --port "$PORT"
