"""Reliability measurement and the self-paced curriculum (docs/curriculum.md).

The algorithm: ``reliability`` (histograms, percent(H, h) and ``select``), ``search`` (the greedy threshold search),
``difficulty`` (source order by entities per expression) and ``algorithm`` (the SSA and MSA loops over a small
train / score interface). Reliable subsets as split files: ``subset_files`` and its command line
``python -m curriculum.select``. The drivers ``python -m curriculum.ssa`` and ``python -m curriculum.msa`` run the
algorithm with the machinery of ``curriculum.runs`` (launching, run cache, state file and resume, work-folder lock).
"""
