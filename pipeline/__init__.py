"""The MRL pipeline: DVC stages on top, the libraries they call below.

- :mod:`pipeline.stages`: one module per DVC stage (``python -m pipeline.stages.<stage>``).
- :mod:`pipeline.ingest`: data in (dataset adapters, the demo generator, video decoding, face tracking,
  cropping, the crop-window reader).
- :mod:`pipeline.learning`: the training loop, the training stages' wrapper, encoder and relation training.
- :mod:`pipeline.scoring`: inference, feature caching, evaluation, metrics, Grad-CAM, ``mrl detect``.
- Shared: :mod:`pipeline.params` (the typed params), :mod:`pipeline.paths` (every declared output),
  :mod:`pipeline.runtime`, :mod:`pipeline.distributed` (torchrun), :mod:`pipeline.tracking` (MLflow), :mod:`pipeline.model_io`,
  :mod:`pipeline.model_card`, :mod:`pipeline.cli` (the ``mrl`` command).

``docs/ARCHITECTURE.md`` draws it.
"""
