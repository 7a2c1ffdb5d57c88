#!/usr/bin/env bash
# Fully supervised CLIP-VG (train on the human 'train' split, --sup_type full) with the published recipe:
# 120 epochs, batch 64 per GPU, AdamW lr 2.5e-4, cosine, crop/scale/translate augmentation; then evaluate.
# Usage: GPUS=0,1,2,3,4 DATA_ROOT=... SPLIT_ROOT=... OUTPUT_ROOT=... bash train_and_eval_script/train_and_eval_full_sup.sh
# (see common.sh for every variable; EPOCHS overrides 120)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for dataset in $DATASETS; do
  train_then_eval "$dataset" "${EPOCHS:-120}" --sup_type full
done
