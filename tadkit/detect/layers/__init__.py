"""Building blocks shared by detection heads (pure PyTorch, no compiled ops).

* :mod:`~tadkit.detect.layers.pyramid` — strided 1-D conv feature pyramids, the
  parameter-free top-down refinement (nearest-neighbour upsampling + addition)
  and the frame-level feature (linear interpolation back to the input length).
* :mod:`~tadkit.detect.layers.attention` — pre-LN transformer encoders with
  padding masks, sinusoidal position embeddings, patch tokens of spatial grids.
* :mod:`~tadkit.detect.layers.boundary` — vectorised boundary max pooling over
  variable-length regions (AFSD-style) and the regions around segment ends.
* :mod:`~tadkit.detect.layers.targets` — class targets over ground truths that
  share a segment (multi-hot, or spread for a softmax).
"""
from tadkit.detect.layers.attention import (TransformerBlock, TransformerEncoder, grid_patches,
                                            sinusoidal_embedding)
from tadkit.detect.layers.boundary import boundary_max_pool, boundary_regions, range_max_table
from tadkit.detect.layers.pyramid import (TemporalPyramid, frame_level_feature, level_centers, level_mask,
                                          pyramid_lengths, refine_top_down, to_level_cells)
from tadkit.detect.layers.targets import instance_classes, softmax_targets

__all__ = ["TransformerBlock", "TransformerEncoder", "grid_patches", "sinusoidal_embedding",
           "boundary_max_pool", "boundary_regions", "range_max_table", "TemporalPyramid",
           "frame_level_feature", "level_centers", "level_mask", "pyramid_lengths", "refine_top_down",
           "to_level_cells", "instance_classes", "softmax_targets"]
