"""Synthetic pose datasets written in the exact COCO and MPII layouts.

The pipeline has to run end to end where the real datasets cannot be
downloaded (a laptop CPU, CI), so this package draws articulated figures and
writes them where ``data/coco`` and ``data/mpii`` would be: the same loaders,
evaluators and detection-box paths then run unchanged on real and synthetic
data.

The data is meant to be learnable and honest:

* Figures are 3-D stick bodies (torso box, thick limbs, head with face and
  hair) posed with plausible joint angles, turned to any yaw and drawn
  far-to-near. The figure's own left limbs are strongly tinted red and its
  right limbs blue (75-90% tint over the clothes' colour), in every image and
  whatever way it faces, so left and right can be told apart from pixels. A
  mirrored figure keeps its colours, so horizontal-flip augmentation and the
  flip test would contradict that cue: train and test on this data without
  them (``data.flip_prob: 0``, ``test.flip: false``, as the ``sample`` preset
  does).
* Visibility comes from the render itself: every person and body part is also
  drawn into a label map. A keypoint is v=2 when the pixel under it belongs to
  one of its own parts (and, for face points, the feature faces the camera),
  v=1 when something else is on top (a later person, or the figure's own
  torso or limb), v=0 with (0, 0, 0) when it lies outside the image.

Conventions: keypoints are OpenCV pixel coordinates (pixel centres at
integers, 0-based) in the COCO files; boxes are COCO ``[x, y, w, h]`` over the
person's visible pixels (x = leftmost pixel index, w = number of columns), and
``area`` is the visible pixel count. The MPII files use MPII's own 1-based
(MATLAB) coordinates, as the released ``mpii_{train,val}.json`` and
``mpii_gt_val.mat`` do: subtract 1 to get 0-based pixels. Every image draws from
its own generator seeded by ``(seed, split, index)``, so output is
byte-identical for a seed and independent of the other split's size.
"""

from ihl.data.synth.coco import MIN_KEYPOINT_AREA, make_coco_synth
from ihl.data.synth.mpii import make_mpii_synth
from ihl.data.synth.render import MIN_VISIBLE_AREA, Scene, render_scene

__all__ = [
    "MIN_KEYPOINT_AREA",
    "MIN_VISIBLE_AREA",
    "Scene",
    "make_coco_synth",
    "make_mpii_synth",
    "render_scene",
]
