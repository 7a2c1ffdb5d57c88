#!/usr/bin/env bash
# Single-source self-paced adapting (SSA) for one dataset with the published recipe: every run (measurer, search
# candidates, final model) trains 110 epochs, batch 64 per GPU, AdamW lr 2.5e-4, cosine, crop/scale/translate
# augmentation, imsize 224, 77 tokens, launched with torchrun on NPROC GPUs; then the final model is evaluated on
# the dataset's evaluation splits. Killed at any point, the same command resumes (state: $OUTPUT_ROOT/ssa/DATASET).
usage() {
  cat <<'USAGE'
Usage: [GPUS=0,1,2,3] [DATA_ROOT=...] [SPLIT_ROOT=...] [OUTPUT_ROOT=...] \
         bash train_and_eval_script/ssa.sh DATASET [driver options, e.g. --force --verbose]
  DATASET           unc, unc+, gref, gref_umd, referit, flickr (or synthetic)
  EPOCHS            final-model epochs (default 110)
  CANDIDATE_EPOCHS  epochs of each search candidate (default EPOCHS: the best candidate is the final model)
  MEASURER_EPOCHS   epochs of the reliability measurer (default EPOCHS)
  MEASURER          an existing measurer checkpoint (skips training one)
  DELTA             greedy search step (default 0.1)
  LAUNCHER          command prefix of every run (default: torchrun --nproc_per_node=$NPROC --master_port=$MASTER_PORT)
  EVAL_FINAL        1 (default) evaluates the final model on the evaluation splits, 0 skips it
  BATCH_SIZE, EVAL_BATCH_SIZE, NUM_WORKERS, EXTRA_ARGS, NPROC, MASTER_PORT: see common.sh
Outputs: $OUTPUT_ROOT/ssa/DATASET/{ssa_state.json, ssa_result.json, ssa_candidates.md, selected/, runs/, eval/}
USAGE
}
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  usage
  [ $# -ge 1 ] && exit 0 || exit 2
fi
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
dataset=$1
shift
work="$OUTPUT_ROOT/ssa/$dataset"
EPOCHS=${EPOCHS:-110}
python -m curriculum.ssa --dataset "$dataset" --data_root "$DATA_ROOT" --split_root "$SPLIT_ROOT" --work_dir "$work" \
  --launcher "${LAUNCHER:-${LAUNCH[*]}}" --delta "${DELTA:-0.1}" --final_epochs "$EPOCHS" \
  --candidate_epochs "${CANDIDATE_EPOCHS:-$EPOCHS}" --measurer_epochs "${MEASURER_EPOCHS:-$EPOCHS}" \
  --score_args "--batch_size ${EVAL_BATCH_SIZE:-128}" ${MEASURER:+--measurer "$MEASURER"} "$@" \
  -- --num_workers "${NUM_WORKERS:-4}" --batch_size "${BATCH_SIZE:-64}" --lr 0.00025 --lr_scheduler cosine \
  --aug_crop --aug_scale --aug_translate --imsize 224 --max_query_len 77 $EXTRA_ARGS
if [ "${EVAL_FINAL:-1}" = "1" ]; then
  final=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["final_model"])' "$work/ssa_result.json")
  for split in $(eval_sets "$dataset"); do
    "${LAUNCH[@]}" eval.py --num_workers "${NUM_WORKERS:-4}" --batch_size "${EVAL_BATCH_SIZE:-128}" \
      --dataset "$dataset" "${PYTHON_ARGS[@]}" --eval_model "$final" --eval_set "$split" --output_dir "$work/eval" \
      --save_predictions "$work/eval/predictions_${split}.jsonl" $EXTRA_ARGS
  done
fi
