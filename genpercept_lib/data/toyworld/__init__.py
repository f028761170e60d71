"""The toy world: procedural scenes with exact labels for every GenPercept task, rendered by a small
vectorised numpy ray-caster (no OpenGL, no downloads).

The paper fine-tunes on Hypersim and Virtual KITTI and evaluates zero-shot on KITTI, NYUv2, ScanNet,
DIODE and ETH3D. Here each dataset has a *toy analogue*: a family of procedural scenes with its own
layouts, textures, focal lengths, lighting and depth ranges (``DOMAIN_INFO``), so "train on two, test on
five unseen" is a real experiment at small scale. Two more domains, ``toy_hypersim_reallike`` and
``toy_vkitti_reallike``, render the *same* scenes as their clean counterparts (identical RGB) but their
labels carry the defects of real captures (depth holes and noise, blurred edges, normals fitted to noisy
depth, coarse masks, jittered keypoints), for the synthetic-vs-real study (Fig. 3).

Scenes are built from four analytic primitives, each intersected with every camera ray at once:
infinite planes (floors, walls, ceilings, roads), spheres, axis-aligned boxes and capsules (cylinders with
round caps: limbs, legs, poles, wires, fence bars). The nearest hit per pixel gives depth, normal,
semantic class and instance; textures (checker, stripes, value noise, bricks, windows, road markings) and
Lambertian shading under a random key light make the RGB informative about geometry.

Modules: ``domains`` (constants, classes, the domain table), ``scene`` (scene description: placement, objects,
people, layouts), ``raycast`` (packing and analytic ray casting, foreground coverage), ``shading`` (textures, light,
sky, fog), ``render`` (one scene to every label; real-like defects), ``batches`` (batches, seeded draws) and
``figure`` (the sample grid). This package re-exports their public names: ``toyworld.render(...)`` as before.

Conventions
-----------
* World frame: metres, y up, the ground / floor is the plane y = 0.
* Camera frame (all labels): x right, y up, z toward the camera (OpenGL style); the camera looks along
  -z. A point in front of the camera has z < 0; its ``depth`` is the planar distance d = -z (not the
  ray length), in metres.
* Pixels: row i, column j; pixel centres sit at image coordinates (u, v) = (j, i).
  ``intrinsics`` K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with cx = cy = (size - 1) / 2, and
  u = cx + fx * x / d,   v = cy - fy * y / d    (d = -z; the minus on v because y points up),
  i.e. K applied to the OpenCV-frame point (x, -y, -z).
* ``normal`` [3, H, W]: unit vectors in the camera frame, on the side of the surface that faces the
  camera (n . p < 0 for the surface point p); zeros where ``valid`` is False.
* ``valid``: a surface was hit and its depth lies inside the domain's depth range
  (``DOMAIN_INFO[domain]["depth_range"]``); ``depth`` is 0 elsewhere (sky, too far, too near).
* ``mask`` and ``alpha`` describe one foreground object per scene (a chair with thin legs, a lamp with a
  semi-transparent shade and a cord, a plant, a fence with wire mesh, a person with hair strands ...).
  ``alpha`` is the object's coverage of each pixel times its opacity: analytic for spheres and capsules
  (a wire thinner than a pixel gets a fractional alpha), 4 x 4 supersampled for boxes, zero where
  something else is in front. The RGB is composited with it, rgb = alpha * F + (1 - alpha) * B, so the
  matting equation holds exactly (before the sensor blur / noise of some domains).
  **mask == (alpha > 0.5)** always (for the real-like domains too): thin structures wider than about
  half a pixel are in the mask; hair strands and semi-transparent parts (a lamp shade) add soft alpha
  around it. Depth, normal and semantic come from the pixel-centre
  ray, so at a few edge pixels they may disagree with the mask.
  Outdoors (street, plaza, facade) the foreground stands 2.5-8 m from the camera and every other object of
  its kind (people, trees, street lamps) at least twice as far, so the image says which object is matted, as
  in P3M's portraits and DIS5K's images (version 2; before, a far foreground beside a nearer look-alike was
  common: measured with ``tasks.matting.look_alike_elsewhere``, 38% -> 12% of toy KITTI scenes, 12% -> 0% of
  toy ETH3D). Indoors the foreground may still share its class with nearby furniture.
  **Subject framing** (``render(..., subject=True)``; the DIS and matting tasks' training and evaluation pools,
  ``Task.subject_framing``): the foreground object is framed as the scene's one subject, as DIS5K and P3M photos
  frame theirs. It stands near the camera, at the distance where its nominal size spans 65-90% of the field of
  view (a fence faces the camera), and the camera turns to it, aiming at its middle (within 8% of the half field of
  view); free-standing objects, people and cabinets stay beyond twice its distance. Its thin parts (chair legs,
  stems, wires, fence bars, hair) are the same. Without the option a scene is exactly the plain one (the extra
  draws happen only with it). ``scripts/subject_check.py`` measures it (``data/subject_check.csv``, 240 held-out
  scenes at 96 px, plain -> subject): the target is the largest object of its semantic class in view in 76% ->
  90% of scenes (by bounding box 85% -> 98%; a lamp's thin pole loses on pixel count to pictures on the wall), a
  look-alike covers half its area outside the matte in 36% -> 24%, its median share of the image is 2.8% -> 6.4%
  and its centroid's median distance from the centre 0.20 -> 0.06 of the image size.
* ``semantic`` [H, W] int64 indexes ``CLASSES`` (0 = sky).
* People are articulated 3D stick figures (capsules between COCO joints, a sphere head).
  ``joints3d`` [N, 17, 3] are the COCO keypoints in the camera frame; ``keypoints`` [N, 17, 3] hold their
  projection (u, v, visibility) with COCO visibility 2 = visible, 1 = in the image but occluded,
  0 = outside the image (u = v = 0 then). ``boxes`` [N, 4] = (x0, y0, x1, y1), in the same image
  coordinates (pixel j spans [j - 0.5, j + 0.5]), enclose each person's visible pixels and visible
  keypoints (a limb thinner than a pixel may miss every pixel centre); ``areas`` [N] count the visible
  pixels; ``instance`` [H, W] int64 is the person index (-1 elsewhere). People with no visible pixel
  are not listed.

Determinism: the scene is drawn from a numpy Generator seeded by a stable hash (zlib) of
(domain, index), so one index is the same scene at every ``size``; pixel-level randomness (sensor noise,
label defects) is seeded by (domain, index, size). A 64 x 64 sample renders in about 10 ms on one CPU
core (``scripts/bench_toyworld.py``): bounding spheres are culled in screen space, so the cost grows
with the pixels each primitive covers.
"""

from __future__ import annotations

from ...domains import (  # noqa: F401
    CLASSES,
    DEFAULT_SIZE,
    DOMAIN_INFO,
    DOMAINS,
    EPS,
    EVAL_DOMAINS,
    GRID_COLORS_V1,
    INDOOR_CLASSES,
    KEYPOINT_NAMES,
    MIN_SIZE,
    REALLIKE_DOMAINS,
    SEMANTIC_COLORS,
    SKELETON,
    SUPERSAMPLE,
    TRAIN_DOMAINS,
    TRAIN_MIX,
    VERSION,
    VIS_TOLERANCE,
)
from .batches import render_batch, sample_training_indices  # noqa: F401
from .figure import write_sample_grid  # noqa: F401
from .render import normals_from_depth, render  # noqa: F401
