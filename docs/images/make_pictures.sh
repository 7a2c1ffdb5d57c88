#!/usr/bin/env bash
# Rebuild the pictures of docs/visualization.md (report gallery, attention map, web page) with a small model
# trained on the synthetic world on the CPU. Usage: docs/images/make_pictures.sh WORK_DIR [STEPS]
set -euo pipefail
work=$(realpath -m "${1:?usage: docs/images/make_pictures.sh WORK_DIR [STEPS]}")
steps=${2:-300}
cd "$(dirname "$0")/../.."
mkdir -p "$work"
# 1. a synthetic world (128 px images; bundled examples assets/examples/shapes_*.png are testB images of it)
python -c "
import sys; from demo.synthetic import SyntheticConfig, generate
generate(sys.argv[1] + '/data', sys.argv[1] + '/splits', SyntheticConfig(image_size=128, n_train_images=800,
         n_val_images=60, n_testA_images=60, n_testB_images=60, n_pretrain=800, min_objects=2, max_objects=3,
         object_scale=1.5, class_textures=True))" "$work"
# 2. a tiny CLIP (64 px input, 8 px patches: an 8x8 patch grid) pretrained on the world's captions for 60 s
python -c "
import sys; from demo.tiny_clip import TinyClipConfig, pretrain_tiny_clip
pretrain_tiny_clip(sys.argv[1] + '/data/synthetic/pretrain/caption_corpus.json', sys.argv[1] + '/tiny_clip.pt',
                   image_resolution=64, config=TinyClipConfig(vision_width=64, vision_layers=2, vision_patch_size=8,
                   text_layers=1), epochs=5, max_seconds=60)" "$work"
# 3. CLIP-VG on the human expressions (fully supervised), $steps optimizer steps
python train_clip_vg.py --sup_type full --dataset synthetic --data_root "$work/data" --split_root "$work/splits" \
  --model "$work/tiny_clip.pt" --imsize 64 --max_steps "$steps" --epochs 30 --batch_size 32 --lr 1e-3 \
  --lr_scheduler cosine --lr_per_step --vl_enc_layers 2 --vl_nheads 4 --vl_dim_feedforward 256 --vl_dropout 0 \
  --no-aug_color --num_workers 0 --cache_images --val_interval_steps "$steps" --eval_set val --device cpu \
  --output_dir "$work/model"
ckpt="$work/model/best_checkpoint.pth"
# 4. the report (gallery picture: its first rows), an attention map, and the page (screenshot by headless Chromium)
python eval.py --eval_model "$ckpt" --dataset synthetic --eval_set testB --data_root "$work/data" \
  --split_root "$work/splits" --device cpu --num_workers 0 --output_dir "$work/eval" --report "$work/report"
python inference.py --eval_model "$ckpt" --device cpu --image assets/examples/shapes_2.png \
  --query "the red square over the star" --attention "$work/attention.png"
python docs/images/screenshot.py --eval_model "$ckpt" --report "$work/report/report.html" \
  --attention "$work/attention.png" --out docs/images
