"""HDF5 store of per-window graph vertices: written by ``cache_features``, read by
``train_relation`` and ``evaluate``.

- :mod:`feature_cache.schema`: layout, dtypes and attribute names, checksums.
- :class:`FeatureCacheWriter`: atomic writer (temporary file + ``os.replace``).
- :func:`open_cache` / :class:`FeatureDataset`: checked reader and torch Dataset.
"""
from .reader import FeatureCache, FeatureCacheError, FeatureDataset, load_split, open_cache
from .schema import SCHEMA_VERSION, sha256_file
from .writer import FeatureCacheWriter

__all__ = ["SCHEMA_VERSION", "sha256_file", "FeatureCacheWriter", "FeatureCache",
           "FeatureCacheError", "FeatureDataset", "load_split", "open_cache"]
