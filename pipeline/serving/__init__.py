"""``mrl serve``: a local web page and HTTP API for scoring videos with the trained model.

:mod:`~pipeline.serving.jobs` (the one worker and its bounded queue), :mod:`~pipeline.serving.uploads`
(streamed, size-limited uploads under generated names), :mod:`~pipeline.serving.card` (what the page says
about the model: its name and test AUC), :mod:`~pipeline.serving.app` (the FastAPI application and the job
that runs ``mrl detect``'s functions), :mod:`~pipeline.serving.server` (the command: load the model, run
uvicorn), ``static/`` (the page: HTML, CSS, a little JavaScript; no CDN).
"""
