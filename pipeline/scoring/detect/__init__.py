"""``mrl detect`` (:mod:`.cli`): score videos with a trained MRL model. One job per module: the command line
(:mod:`.cli`, with the model opening that ``mrl detect`` and ``mrl serve`` share), loading the model
(:mod:`.models`), the detection (:mod:`.detection`), writing the results (:mod:`.outputs`)."""
from .cli import add_arguments, main, open_model_or_explain, run
from .detection import (DETECT_FORMAT, RESERVED_NAMES, VIDEO_EXTENSIONS, FoundVideo, detect, detect_video, find_videos,
                        video_name, write_heatmaps)
from .models import PICKLE_MESSAGE, LoadedModel, PickleRefused, load_from_options, load_mlflow_model, load_model_files
from .outputs import SUMMARY_COLUMNS, existing_outputs, output_problem, planned_outputs, write_outputs

__all__ = ["DETECT_FORMAT", "VIDEO_EXTENSIONS", "RESERVED_NAMES", "FoundVideo", "video_name", "planned_outputs",
           "existing_outputs", "SUMMARY_COLUMNS", "PICKLE_MESSAGE", "LoadedModel", "PickleRefused",
           "load_model_files", "load_mlflow_model", "load_from_options", "open_model_or_explain", "find_videos", "detect_video", "write_heatmaps", "detect",
           "write_outputs", "output_problem", "add_arguments", "run", "main"]
