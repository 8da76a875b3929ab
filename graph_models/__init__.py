"""Masked Relation Learning for DeepFake Detection (Yang et al., IEEE TIFS 2023), Sec. III.

One file per concept, one named function per equation:

==========  ==============================================  =========================================
equation    what                                            where
==========  ==============================================  =========================================
Eq. 1       ``E <- eta * E``                                 :func:`masking.mask_edges`,
                                                            :class:`masking.EdgeMasking`
Eq. 3       ``F = F_0 * F_A``; normalised average pooling    :func:`sta.attention_features`,
                                                            :func:`sta.normalized_average_pooling`
Eq. 4       orthogonal diversity ``L_od``                    :func:`losses.orthogonal_diversity_loss`
Eq. 5       temporal consistency ``L_tc``                    :func:`losses.temporal_consistency_loss`
Eq. 6       minimal masking                                  :func:`masking.minimal_mask`
Eq. 7       random masking                                   :func:`masking.random_mask`
Eq. 8, 9    ``GConv(X, E) = E X W``                          :func:`gconv_gru.graph_conv`
Eq. 10      GRU gates                                        :func:`gconv_gru.gru_update`
Eq. 11      cross-entropy                                    :func:`losses.classification_loss`
Eq. 12      total loss                                       :func:`losses.mrl_loss`
==========  ==============================================  =========================================
"""
import warnings

with warnings.catch_warnings():
    # PyG 2.8 calls torch.jit.script while it imports (torch_geometric/nn/pool/select/base.py) and torch 2.14
    # deprecates that with a FutureWarning about PyG's code, printed first by every stage and `mrl detect`.
    # Silenced for this one import, for this one message: any later torch.jit.script call still warns.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import torch_geometric  # noqa: F401

from .backbones import build_backbone  # noqa: E402
from .gconv_gru import DenseGConvGRU, DenseGConvGRUCell, build_cell  # noqa: E402
from .losses import mrl_loss  # noqa: E402
from .masking import EdgeMasking, mask_edges  # noqa: E402
from .mrl import (Encoder, EncoderOutput, MRLModel, RelationLearner, build_encoder, build_masking,  # noqa: E402
                  build_model, build_relation)
from .sta import STA  # noqa: E402

__all__ = ["Encoder", "EncoderOutput", "RelationLearner", "MRLModel", "build_encoder", "build_relation",
           "build_model", "build_masking", "mrl_loss", "mask_edges", "EdgeMasking", "STA", "DenseGConvGRU",
           "DenseGConvGRUCell", "build_cell", "build_backbone"]
