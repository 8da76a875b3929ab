"""Learning: the shared training loop (:mod:`.training`), data parallelism (:mod:`.distributed`), and the
two trainings of the pipeline (:mod:`.encoder`, :mod:`.relation`)."""
