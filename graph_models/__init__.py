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
from .backbones import build_backbone
from .gconv_gru import DenseGConvGRU, DenseGConvGRUCell, build_cell
from .losses import mrl_loss
from .masking import EdgeMasking, mask_edges
from .mrl import (Encoder, EncoderOutput, MRLModel, RelationLearner, build_encoder, build_masking, build_model,
                  build_relation)
from .sta import STA

__all__ = ["Encoder", "EncoderOutput", "RelationLearner", "MRLModel", "build_encoder", "build_relation",
           "build_model", "build_masking", "mrl_loss", "mask_edges", "EdgeMasking", "STA", "DenseGConvGRU",
           "DenseGConvGRUCell", "build_cell", "build_backbone"]
