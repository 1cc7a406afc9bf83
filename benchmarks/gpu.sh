#!/usr/bin/env bash
# The GPU benchmark as one command for a lent accelerator (JAX, Flax, Optax and
# PyTorch installed there; nothing else needed): about 8 minutes.
#   bash benchmarks/gpu.sh [OUT_DIR]        # default docs/benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/benchmarks}"
card="$(python -c 'import jax; print(jax.devices()[0].device_kind.replace(" ", "_"))')"
PYTHONPATH=. timeout 540 python -m benchmarks.gpu --budget_s 420 --out "$out/gpu_${card}.json"
