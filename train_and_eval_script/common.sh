# Shared settings for the train/eval scripts: paths, GPUs and process count from the environment.
#   DATA_ROOT    image folders (default ./data/image_data)
#   SPLIT_ROOT   split files (default ./data/pseudo_samples)
#   OUTPUT_ROOT  where each dataset's run folder goes (default ./outputs)
#   GPUS         CUDA_VISIBLE_DEVICES list, e.g. 0,1,2,3 (default: all visible GPUs)
#   NPROC        processes per node (default: number of GPUs in GPUS, or of visible GPUs; 1 on CPU)
#   MASTER_PORT  rendezvous port (default 28887)
#   DATASETS     space-separated subset of: unc unc+ gref gref_umd referit flickr (default: all six)
#   EXTRA_ARGS   appended to every command (e.g. "--model ViT-L/14 --vl_hidden_dim 768")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA_ROOT=${DATA_ROOT:-./data/image_data}
SPLIT_ROOT=${SPLIT_ROOT:-./data/pseudo_samples}
OUTPUT_ROOT=${OUTPUT_ROOT:-./outputs}
MASTER_PORT=${MASTER_PORT:-28887}
DATASETS=${DATASETS:-"unc unc+ gref gref_umd referit flickr"}
EXTRA_ARGS=${EXTRA_ARGS:-}
if [ -n "${GPUS:-}" ]; then
  export CUDA_VISIBLE_DEVICES=$GPUS
  NPROC=${NPROC:-$(awk -F, '{print NF}' <<<"$GPUS")}
fi
NPROC=${NPROC:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
LAUNCH=(torchrun --nproc_per_node="$NPROC" --master_port="$MASTER_PORT")
PYTHON_ARGS=(--data_root "$DATA_ROOT" --split_root "$SPLIT_ROOT" --imsize 224 --max_query_len 77)

# Evaluation splits of each dataset.
eval_sets() {
  case "$1" in
    unc|unc+) echo "val testA testB" ;;
    gref) echo "val" ;;
    gref_umd|referit|flickr) echo "val test" ;;
    *) echo "unknown dataset $1" >&2; return 1 ;;
  esac
}

# train_then_eval DATASET EPOCHS [extra train flags...]
train_then_eval() {
  local dataset=$1 epochs=$2; shift 2
  local out="$OUTPUT_ROOT/$dataset"
  "${LAUNCH[@]}" train_clip_vg.py --num_workers "${NUM_WORKERS:-4}" --epochs "$epochs" \
    --batch_size "${BATCH_SIZE:-64}" --lr 0.00025 --lr_scheduler cosine --aug_crop --aug_scale --aug_translate \
    --dataset "$dataset" "${PYTHON_ARGS[@]}" --output_dir "$out" --resume auto "$@" $EXTRA_ARGS
  for split in $(eval_sets "$dataset"); do
    "${LAUNCH[@]}" eval.py --num_workers "${NUM_WORKERS:-4}" --batch_size "${EVAL_BATCH_SIZE:-128}" \
      --dataset "$dataset" "${PYTHON_ARGS[@]}" --eval_model "$out/best_checkpoint.pth" --eval_set "$split" \
      --output_dir "$out" --save_predictions "$out/predictions_${split}.jsonl" $EXTRA_ARGS
  done
}
