#!/usr/bin/env bash
# The ResNet-12 memory rows on a lent accelerator (JAX, Flax, Optax there;
# nothing else needed), every shape timed, time-boxed to 9 minutes; rows are
# saved one by one, so a stop keeps what was measured.
#   bash benchmarks/gpu_resnet12.sh [OUT_DIR] [SHAPES...]   # default: docs/benchmarks, resnet12_84 resnet12_32
#   bash benchmarks/gpu_resnet12.sh /tmp/out resnet12_tiny  # the same on any machine, in a few minutes
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out="${1:-docs/benchmarks}"
shift
shapes="${*:-resnet12_84 resnet12_32}"
card="$(python -c 'import jax; print(jax.devices()[0].device_kind.replace(" ", "_"))')"
# shellcheck disable=SC2086
PYTHONPATH=. timeout 540 python -m benchmarks.harness --sections resnet12_memory \
  --memory_shapes $shapes --memory_compile_only --memory_steps 1 3 5 --repeats 5 \
  --out "$out/resnet12_memory_${card}" || echo "stopped (status $?): the rows so far are in $out/resnet12_memory_${card}"
