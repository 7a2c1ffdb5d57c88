#!/usr/bin/env bash
# Unsupervised CLIP-VG (train on train_pseudo) with the published recipe: 110 epochs, batch 64 per GPU,
# AdamW lr 2.5e-4, cosine, crop/scale/translate augmentation; then evaluate each dataset's splits.
# Usage: GPUS=0,1,2,3,4,5 DATA_ROOT=... SPLIT_ROOT=... OUTPUT_ROOT=... bash train_and_eval_script/train_and_eval_unsup.sh
# (see common.sh for every variable; EPOCHS overrides 110)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for dataset in $DATASETS; do
  train_then_eval "$dataset" "${EPOCHS:-110}"
done
