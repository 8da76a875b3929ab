"""Learning: the shared training loop (:mod:`.training`), what the training stages do around it
(:mod:`.stage_run`), and the two trainings of the pipeline (:mod:`.encoder`, :mod:`.relation`)."""
