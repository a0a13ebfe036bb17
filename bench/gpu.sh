#!/usr/bin/env bash
# GPU benchmark in one command (bench/gpu_bench.py has the details): raw ONNX Runtime vs gan-serve with 1
# and N workers (DCGAN 64x64, PGGAN 256, 1 and 64 images per request, fp32 and fp16) and gan-train's
# DCGAN loop vs the pytorch/examples loop at batch 128. Writes bench/.work/gpu/gpu_bench.{json,md}.
#
#   bash bench/gpu.sh                                   # onnxruntime-gpu already installed
#   bash bench/gpu.sh --ort-wheel /path/onnxruntime_gpu-1.26.0-cp311-cp311-manylinux_2_27_x86_64.whl
#   bash bench/gpu.sh --device cpu --pggan-size 32 --duration 2 --train-steps 3   # the CPU path, quickly
#
# With --ort-wheel and no CUDA provider in the current onnxruntime, the wheel is installed into
# bench/.work/gpu/ort-gpu (pip --target, no dependencies: the CPU build's are the same) and put first on
# PYTHONPATH, so the venv's CPU onnxruntime is left as it is. Needs the train, export and serve extras;
# wrk is used when present (apt-get install wrk), else a Python client.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORK=bench/.work/gpu
WHEEL=""
ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --ort-wheel) WHEEL="$2"; shift 2 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
mkdir -p "$WORK"
has_cuda() { "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())" 2>/dev/null; }
if [[ -n "$WHEEL" ]] && ! has_cuda; then
    [[ -f "$WHEEL" ]] || { echo "gpu.sh: no such wheel: $WHEEL" >&2; exit 2; }
    "$PY" -m pip install --quiet --no-deps --upgrade --target "$WORK/ort-gpu" "$WHEEL"
    export PYTHONPATH="$PWD/$WORK/ort-gpu${PYTHONPATH:+:$PYTHONPATH}"
    has_cuda || echo "gpu.sh: warning: the wheel's onnxruntime offers no CUDAExecutionProvider" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/gpu_bench.py --work "$WORK" "${ARGS[@]}"
