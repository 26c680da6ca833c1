"""Building blocks shared by detection heads (pure PyTorch, no compiled ops).

* :mod:`~tadkit.detect.layers.pyramid` — strided 1-D conv feature pyramids, the
  parameter-free top-down refinement (nearest-neighbour upsampling + addition)
  and the frame-level feature (linear interpolation back to the input length).
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
* :mod:`~tadkit.detect.layers.anchors` — (start, end) anchors of BSN / BMN-style
  proposal maps and their labels: boundary-region labels, the dense anchor map,
  best-tIoU matching, centre / duration offsets.
"""
from tadkit.detect.layers.align import segment_align, segment_align_batched
from tadkit.detect.layers.anchors import (anchor_map, apply_offsets, boundary_labels, match_anchors,
                                          offset_targets)
from tadkit.detect.layers.attention import (TransformerBlock, TransformerEncoder, grid_patches,
                                            sinusoidal_embedding)
from tadkit.detect.layers.boundary import boundary_max_pool, boundary_regions, range_max_table
from tadkit.detect.layers.peaks import boundary_peaks, peak_pairs
from tadkit.detect.layers.pyramid import (TemporalPyramid, frame_level_feature, level_centers, level_mask,
                                          pyramid_lengths, refine_top_down)
from tadkit.detect.layers.sequence import MaskedLSTM, reverse_padded

__all__ = ["TransformerBlock", "TransformerEncoder", "grid_patches", "sinusoidal_embedding",
           "boundary_max_pool", "boundary_regions", "range_max_table", "TemporalPyramid",
           "frame_level_feature", "level_centers", "level_mask", "pyramid_lengths", "refine_top_down",
           "segment_align", "segment_align_batched", "boundary_peaks", "peak_pairs", "MaskedLSTM",
           "reverse_padded", "boundary_labels", "anchor_map", "match_anchors", "offset_targets",
           "apply_offsets"]
