"""The DVC stages, one module per ``dvc.yaml`` stage, in pipeline order (:data:`pipeline.paths.STAGES`).

Each module has one ``main``: read params, call library code, write the declared outputs
(:mod:`pipeline.paths`), track in MLflow. No stage imports another stage, and no library imports a stage.

    demo -> manifest -> crop -> train_encoder -> cache_features -> train_relation -> evaluate
                      crop -> baseline
    (every metrics/*.json) -> track     (always run: the MLflow store follows the workspace)
"""
