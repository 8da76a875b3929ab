"""The DVC stages, one module per ``dvc.yaml`` stage, in pipeline order (:data:`pipeline.paths.STAGES`).

Each module has one ``main``: read params, call library code, write the declared outputs
(:mod:`pipeline.paths`), track in MLflow. No stage imports another stage, and no library imports a stage. Importing the package installs
:func:`pipeline.errors.install_refusal_hook`: a stage that refuses its input ends with one message, no traceback.

    demo -> manifest -> crop -> train_encoder -> cache_features -> train_relation -> evaluate
                      crop -> baseline
    (every metrics/*.json) -> track     (always run: the MLflow store follows the workspace)
"""
from pipeline.cpu_kernels import pin_cpu_kernels

# first, before numpy or torch loads: every numeric library's kernels pinned to one code path (pipeline/cpu_kernels.py
# says which), so a run repeats bit for bit on another machine (MRL_NATIVE_CPU=1: the CPU's own, faster kernels)
pin_cpu_kernels()

from pipeline.errors import install_refusal_hook  # noqa: E402

# a stage that refuses its input (pipeline.errors.InputRefused: a params key, a leaking manifest, ...) prints one
# message with the fix and exits 1, no traceback; every other error keeps its traceback
install_refusal_hook()
