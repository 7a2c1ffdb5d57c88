"""The demo (``python demo.py``): the paper's pipeline in miniature on a synthetic world, on a 2-core CPU.

``synthetic`` generates the world (data set ``synthetic``), ``tiny_clip`` pretrains the small CLIP every run loads,
``jobs`` runs the demo's interdependent jobs on its CPU lanes and ``pipeline`` runs the stages and reports the
results (docs/demo.md).
"""
