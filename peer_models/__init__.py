"""Published detectors run beside MRL on the same test videos (frozen, never trained here).

- :mod:`peer_models.mesonet`: Meso-4 (Afchar et al., WIFS 2018) in PyTorch with the authors' Keras weights
  (``peer_models/weights/mesonet/``, Apache-2.0), checked by SHA-256.

Kept apart from ``graph_models`` on purpose: the MRL training stages depend on that folder, so a peer's code
or weights changing must not re-train MRL.
"""
from .mesonet import Meso4, load_meso4

__all__ = ["Meso4", "load_meso4"]
