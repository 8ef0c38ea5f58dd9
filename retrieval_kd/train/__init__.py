"""Students trained from stored teacher scores (``rkd train``).

``config`` (TrainConfig), ``examples`` (rows from score stores + candidates + qrels),
``students`` (a student of a family, :mod:`retrieval_kd.families`), ``losses`` (weighted
combinations of the families' losses), ``stage`` (``train_stage(cfg) -> Path``, resumable from
checkpoints).
"""
