"""``mrl detect`` (:mod:`.cli`): score videos with a trained MRL model. One job per module: the command line
(:mod:`.cli`), loading the model (:mod:`.models`), the detection (:mod:`.detection`), writing the results
(:mod:`.outputs`)."""
from .cli import add_arguments, main, run
from .detection import DETECT_FORMAT, VIDEO_EXTENSIONS, detect, detect_video, find_videos, write_heatmaps
from .models import PICKLE_MESSAGE, LoadedModel, PickleRefused, load_mlflow_model, load_model_files
from .outputs import SUMMARY_COLUMNS, output_problem, write_outputs

__all__ = ["DETECT_FORMAT", "VIDEO_EXTENSIONS", "SUMMARY_COLUMNS", "PICKLE_MESSAGE", "LoadedModel", "PickleRefused",
           "load_model_files", "load_mlflow_model", "find_videos", "detect_video", "write_heatmaps", "detect",
           "write_outputs", "output_problem", "add_arguments", "run", "main"]
