"""Human pose estimation (supplementary sections 6 and 8.6, Table 3): top-down keypoints from person crops.

The authors released no pose code; the supplementary says: top-down with person boxes from Simple Baseline,
15K COCO training samples, ViTPose's keypoint head decoding the output, COCO val AP against Painter. We build
exactly that on the one-step U-Net:

* a person box becomes a crop at ViTPose's aspect ratio (3 : 4; 192 x 256 in the paper profile) with mmpose's
  1.25 padding (``keypoints.box_to_center_scale``, ``crop_transform``, ``cv2.warpAffine`` as mmpose);
* the crop is encoded by the frozen VAE and run once through the U-Net (t = 1, eq. (9)); its decoder feature
  at 1/16 of the crop (the ViT backbone's stride in ViTPose; SD2.1's second up block) feeds a ViTPose "classic"
  keypoint head (``model.KeypointHead``: two 4 x 4 deconvolutions of 256 channels, a 1 x 1 conv to 17 maps),
  so the heatmaps are 1/4 of the crop, like ViTPose's 48 x 64;
* U-Net and head train together on mmpose's ``JointsMSELoss`` (target weights) against MSRA Gaussian targets
  (sigma 2), with mmpose's left-right flip augmentation;
* decoding: argmax with the quarter-pixel shift towards the higher neighbour, flip test (COCO's left/right
  pairs, the flipped heatmaps shifted by one pixel, ``shift_heatmap=True`` of mmpose's non-UDP configs), back to
  image pixels; person score = box score x mean of the keypoint scores above 0.2 (mmpose's rescoring);
* COCO keypoint AP (``metrics.py``, pycocotools).

Toy world: people in a 64 px scene are a few pixels tall, so scenes are rendered at ``PoseSettings.size``
(128 px in the default profile; the same scene at every size) and person crops taken from them at
``PoseSettings.crop`` (96 x 128 in the default profile; smaller crops: docs/measurements.md). All of pose's settings
are one typed ``PoseSettings`` per profile (``settings.SETTINGS``; overrides ``{"tasks": {"pose": {...}}}``).
Being half the paper's crop, the toy crop is read at 1/8 (``FEATURE_STRIDE``: the tiny U-Net's finest up
block, 12 x 16 features, the grid ViTPose's head reads at 1/16 of 192 x 256) by a head with one deconvolution (64
channels, ViTPose's 256 on SD2.1's features), heatmaps still at 1/4 of the crop (24 x 32); training adds box-jittered
copies of every person (``PoseSettings.augment_copies``, ``augment``) and the default profile trains pose with its
own learning rate (``PoseSettings.lr``). People smaller than ``MIN_BOX_HEIGHT`` pixels or with
fewer than ``MIN_KEYPOINTS`` labelled keypoints are not trained on (all are evaluated). Evaluation: every
person of the held-out domains' scenes, with the ground-truth boxes and with jittered boxes (a stand-in for a
detector's).

The package, bottom to top: ``keypoints`` (mmpose's box -> crop, targets, decoding, as pure functions),
``metrics`` (COCO keypoint AP), ``settings`` (its typed settings per profile), ``crops``, ``data`` (toy scenes,
evaluation items),
``task`` (the registered ``Task``: name, metrics, evaluation sets, scoring), ``training``, ``model`` (keypoint
head on the U-Net) and ``pipeline`` (train, predict, tidy rows). Importing it registers the task "pose"::

    from genpercept_lib import pose
    spec = FinetuneSpec(task="pose")
    rows = pose.run(cfg, prior, spec, sets)          # the model rows, tidy like experiment.run's
    refs = pose.references(cfg, prior, spec, sets)   # untrained, image-blind (mean pose), heatmap-ceiling
"""

from __future__ import annotations

from .pipeline import KINDS, finetune, initial_model, predictions, references, run
from .settings import crop_size
from .task import POSE, Pose

__all__ = ["KINDS", "POSE", "Pose", "crop_size", "finetune", "initial_model", "predictions", "references", "run"]
