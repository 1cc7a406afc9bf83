#!/usr/bin/env bash
# The MAML Omniglot table on a lent GPU, as one prepared command (the device
# tool runs it from the repository root, with $OUT the folder that comes back):
#
#   bash experiments/fewshot/gpu_table.sh             # 480 s of meta-training in all
#   bash experiments/fewshot/gpu_table.sh --dry_run   # tiny runs through the same code, any CPU
#
# Second order, the four Omniglot settings, seed 0 (SEEDS for more: seed 0 of
# each first, then the next seeds); each run gets what is left of the budget over the runs left
# (python -m experiments.fewshot.table --time_budget_s). The budget is
# meta-training only: loading the data, compiling, validating and testing each
# run come on top, so the later seeds may not fit in one call; what finished
# is in the table, and a next call resumes the rest (with runs.tar.gz and the
# checkpoint parts unpacked into its $WORKDIR).
#
# Environment (all optional):
#   DATA_DIR   Omniglot's zips (default: shared/data/omniglot in the repository
#              if there, else the experiment's default, ../shared/data/omniglot;
#              on the device machine ../shared does not exist: carry the data)
#   BUDGET_S   total seconds of meta-training (default 480; dry run 6)
#   SETTINGS   comma-separated config names (default: the four Omniglot ones)
#   SEEDS      comma-separated (default 0: the budget split over 4 runs, 120 s
#              each; 0,1,2 splits it over 12)
#   LIMIT_S    wall-clock limit of the table (default 560, under the device
#              tool's 600 s; dry run 300); on it the table stops (SIGINT) and
#              the outputs are still packed
#   WORKDIR    the runs' folders (default /tmp/jaxmaml_table, dry run
#              /tmp/jaxmaml_table_dry: checkpoints are too many files, too deep,
#              for $OUT)
#   OUT        where the results go (the device tool sets it; default: a new
#              temporary folder)
#
# Writes $OUT/table/: table.md, table.json, table.png, table.log (the output),
# runs.tar.gz (every run's results.json, log.jsonl and learning curve)
# and checkpoints.tar.gz.00, .01, .02 (state/ and best/, to resume from, in
# parts of 15 MiB: `cat checkpoints.tar.gz.* | tar xz -C $WORKDIR`; left out
# if over three parts). The XLA compilation cache is off: every compile is
# timed as a fresh machine's.
set -euo pipefail
cd "$(dirname "$0")/../.."

dry_run=0
case "${1:-}" in
  --dry_run | --tiny) dry_run=1 ;;
  '') ;;
  *)
    echo "usage: $0 [--dry_run]" >&2
    exit 2
    ;;
esac

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
out="${OUT:-$(mktemp -d)}/table"
if ((dry_run)); then workdir="${WORKDIR:-/tmp/jaxmaml_table_dry}"; else workdir="${WORKDIR:-/tmp/jaxmaml_table}"; fi
mkdir -p "$out" "$workdir"

args=(--settings "${SETTINGS:-omniglot_5way1shot,omniglot_5way5shot,omniglot_20way1shot,omniglot_20way5shot}"
  --algorithms maml --workdir "$workdir" --cache_dir "${CACHE_DIR:-/tmp/jaxmaml_cache}"
  --log jsonl)  # No TensorBoard files: tensorboardX is not installed there.
if [[ -n "${DATA_DIR:-}" ]]; then
  args+=(--data_dir "$DATA_DIR")
elif [[ -d shared/data/omniglot ]]; then
  args+=(--data_dir shared/data/omniglot)
fi
if ((dry_run)); then
  # Tiny runs through the same code: 3 iterations of 2 tasks, 1 inner step.
  args+=(--time_budget_s "${BUDGET_S:-6}" --seeds "${SEEDS:-0}" --num_iterations 3
    --meta_batch_size 2 --train_inner_steps 1 --eval_inner_steps 1 --eval_every 3
    --checkpoint_every 3 --log_every 1 --num_val_tasks 4 --num_test_tasks 8)
  limit="${LIMIT_S:-300}"
else
  args+=(--time_budget_s "${BUDGET_S:-480}" --seeds "${SEEDS:-0}")
  limit="${LIMIT_S:-560}"
fi

# The compilation cache off, whatever the environment says.
unset JAX_COMPILATION_CACHE_DIR
export JAX_ENABLE_COMPILATION_CACHE=false
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_MININTERVAL=30  # A progress line every 30 s, not a flood in the log.

"$python" -c 'import jax; print("devices:", jax.devices(), jax.devices()[0].device_kind)' \
  2>&1 | tee "$out/table.log"
echo "table: ${args[*]} (limit ${limit} s)" | tee -a "$out/table.log"
set +e
timeout --signal=INT --kill-after=20 "$limit" \
  "$python" -m experiments.fewshot.table "${args[@]}" 2>&1 | tee -a "$out/table.log"
status=${PIPESTATUS[0]}
set -e
echo "table command exit status: $status, ${SECONDS} s of wall time" | tee -a "$out/table.log"

for name in table.md table.json table.png; do
  if [[ -f "$workdir/$name" ]]; then cp "$workdir/$name" "$out/"; fi
done
(cd "$workdir" && find . -mindepth 2 -maxdepth 2 \
  \( -name results.json -o -name log.jsonl -o -name learning_curve.png \) \
  -print0 | tar --null -czf "$out/runs.tar.gz" -T -)
(cd "$workdir" && find . -mindepth 2 -maxdepth 2 -type d \( -name state -o -name best \) \
  -print0 | tar --null -cz -T - | split -b 15M -d -a 2 - "$out/checkpoints.tar.gz.")
parts=("$out"/checkpoints.tar.gz.*)
if ((${#parts[@]} > 3)); then
  echo "checkpoints over 3 parts of 15 MiB: left out" | tee -a "$out/table.log"
  rm "$out"/checkpoints.tar.gz.*
fi
if [[ -f "$out/table.md" ]]; then cat "$out/table.md"; fi
echo "wrote $out: $(ls "$out" | tr '\n' ' ')"
exit "$status"
