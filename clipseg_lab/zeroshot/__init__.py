"""Training-free open-vocabulary segmentation of remote-sensing tiles with a frozen CLIP (ReSeg-CLIP and relatives).

* `dense`: dense CLIP features with a modified last block (vanilla, MaskCLIP, SCLIP, ClearCLIP, NACLIP) and
  per-block attention masks;
* `masks`: ReSeg-CLIP's hierarchical attention masks (unrestricted, neighbourhood, SAM regions);
* `sam`: SAM checkpoints (and a tiny random SAM for tests), multi-parameter-set region partitions, cached;
* `text`: queries per class, `query_to_class`, prompt templates, class scores, background threshold;
* `sliding`: batched sliding windows with exact reassembly;
* `config` / `pipeline`: the `config.yml`, tile walking, shards, resume, outputs, merge (`clipseg-lab rs-infer`);
* `report` / `viz`: per-class tables, figure rows, colour maps and figures (notebook 09).
"""

from clipseg_lab.zeroshot.config import ZeroShotConfig, load_config, prepare_config, with_overrides
from clipseg_lab.zeroshot.dense import VARIANTS, DenseClip
from clipseg_lab.zeroshot.pipeline import (
                                           RunSummary,
                                           TilePrediction,
                                           ZeroShotSegmenter,
                                           ablation,
                                           merge_outputs,
                                           open_tiles,
                                           parse_shard,
                                           run,
                                           shard_tiles,
)
from clipseg_lab.zeroshot.sam import SamRegionGenerator, load_sam, tiny_random_sam
from clipseg_lab.zeroshot.sliding import SlidingWindow, slide, window_boxes

__all__ = ["VARIANTS", "DenseClip", "RunSummary", "SamRegionGenerator", "SlidingWindow", "TilePrediction",
           "ZeroShotConfig", "ZeroShotSegmenter", "ablation", "load_config", "load_sam", "merge_outputs", "open_tiles",
           "parse_shard", "prepare_config", "run", "shard_tiles", "slide", "tiny_random_sam", "window_boxes",
           "with_overrides"]
