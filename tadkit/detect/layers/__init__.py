"""Building blocks shared by detection heads (pure PyTorch, no compiled ops).

* :mod:`~tadkit.detect.layers.pyramid` — strided 1-D conv feature pyramids, the
  parameter-free top-down refinement (nearest-neighbour upsampling + addition),
  the frame-level feature (linear interpolation back to the input length) and
  pyramids whose lowest levels are stored backbone levels resampled onto the cells.
* :mod:`~tadkit.detect.layers.attention` — pre-LN transformer encoders with
  padding masks, sinusoidal position embeddings, patch tokens of spatial grids.
* :mod:`~tadkit.detect.layers.boundary` — vectorised boundary max pooling over
  variable-length regions (AFSD-style) and the regions around segment ends.
* :mod:`~tadkit.detect.layers.align` — 1-D RoI align of segments to a fixed
  number of bins (SP-TAD's SoI Align, MENet's SAlign, refine-network RoI align).
* :mod:`~tadkit.detect.layers.sequence` — LSTMs over right-padded batches
  (packed; backward paths reverse each sequence within its own length).
* :mod:`~tadkit.detect.layers.peaks` — BSN / BMN boundary-peak candidates and
  their start-end pairs.
* :mod:`~tadkit.detect.layers.matching` — set-prediction matching cost
  (focal + L1 + GIoU) and the Hungarian assignment (query-based heads: SP-TAD).
* :mod:`~tadkit.detect.layers.proposal_map` — duration × start proposal maps
  (BMN, MENet): entry geometry and validity, IoU label maps, boundary and
  actionness labels, boundary-peak candidates read from a map.
* :mod:`~tadkit.detect.layers.boundary_matching` — BMN's boundary-matching
  layer (precomputed sparse sampling weights, fused with its 3-D conv).
* :mod:`~tadkit.detect.layers.non_local` — the non-local block over 1-D
  sequences.
* :mod:`~tadkit.detect.layers.anchors` — MENet's anchor sets on the proposal
  map layout: the map without its duration-0 row, best-tIoU matching, centre /
  duration offsets.
* :mod:`~tadkit.detect.layers.targets` — class targets over ground truths that
  share a segment (multi-hot, or spread for a softmax).
"""
from tadkit.detect.layers.align import segment_align, segment_align_batched
from tadkit.detect.layers.anchors import anchor_map, apply_offsets, match_anchors, offset_targets
from tadkit.detect.layers.attention import (TransformerBlock, TransformerEncoder, grid_patches,
                                            sinusoidal_embedding)
from tadkit.detect.layers.boundary import boundary_max_pool, boundary_regions, range_max_table
from tadkit.detect.layers.boundary_matching import BoundaryMatching, sampling_weights
from tadkit.detect.layers.matching import hungarian_match, match_sets, matching_cost
from tadkit.detect.layers.non_local import NonLocal1d
from tadkit.detect.layers.peaks import boundary_peaks, peak_pairs
from tadkit.detect.layers.proposal_map import (boundary_labels, cell_overlap, iou_map, map_segments, map_valid,
                                               pair_candidates, proposal_detections)
from tadkit.detect.layers.pyramid import (StoredLevelPyramid, TemporalPyramid, frame_level_feature, level_centers,
                                          level_mask, pyramid_lengths, refine_top_down, steps_to_cells,
                                          to_level_cells)
from tadkit.detect.layers.sequence import MaskedLSTM, reverse_padded
from tadkit.detect.layers.targets import instance_classes, softmax_targets

__all__ = ["TransformerBlock", "TransformerEncoder", "grid_patches", "sinusoidal_embedding",
           "boundary_max_pool", "boundary_regions", "range_max_table", "TemporalPyramid", "StoredLevelPyramid",
           "frame_level_feature", "level_centers", "level_mask", "pyramid_lengths", "refine_top_down",
           "to_level_cells", "steps_to_cells", "instance_classes", "softmax_targets",
           "segment_align", "segment_align_batched", "boundary_peaks", "peak_pairs", "MaskedLSTM",
           "reverse_padded", "BoundaryMatching", "sampling_weights", "NonLocal1d", "boundary_labels",
           "cell_overlap", "iou_map", "map_segments", "map_valid", "pair_candidates", "proposal_detections",
           "anchor_map", "match_anchors", "offset_targets", "apply_offsets",
           "hungarian_match", "match_sets", "matching_cost"]
