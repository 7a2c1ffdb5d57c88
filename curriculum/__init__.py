"""Reliability measurement and the self-paced curriculum (SPEC §4).

``reliability`` (histograms, percent(H, h), official subsets, scoring outputs), ``selection`` and the
``python -m curriculum.select`` CLI (reliable subsets as split files, train_separate naming, merging), ``search``
(the greedy threshold search), ``difficulty`` (source order by entities per expression), ``runner`` (resumable
training / scoring subprocesses), ``state`` (driver state file and work-dir lock), and the drivers
``python -m curriculum.ssa`` and ``python -m curriculum.msa``.
"""
