"""Scoring: the per-window inference path (:mod:`.inference`), the feature cache builder (:mod:`.features`),
test evaluation (:mod:`.evaluation`), metrics (:mod:`.metrics`), Grad-CAM (:mod:`.explain`) and
``mrl detect`` (:mod:`.detect`)."""
