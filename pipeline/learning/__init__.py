"""Learning: the shared training loop (:mod:`.training`) and the
two trainings of the pipeline (:mod:`.encoder`, :mod:`.relation`)."""
