"""Students trained from stored teacher scores (``rkd train``).

``config`` (TrainConfig), ``examples`` (rows from score stores + candidates + qrels),
``students`` (the four families), ``losses`` (per-family ST losses, weighted combinations),
``stage`` (``train_stage(cfg) -> Path``, resumable from checkpoints).
"""
