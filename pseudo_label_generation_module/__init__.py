"""Pseudo-language labels from upstream model outputs (docs/method.md#pseudo-language-label-sources): template,
relation and caption sources, merging and statistics. See README.md in this folder; each step is a CLI: ``python -m pseudo_label_generation_module.<step>``
with step one of ``convert``, ``template``, ``relation``, ``caption``, ``stats``, ``merge``.
"""
