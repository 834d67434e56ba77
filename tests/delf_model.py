"""A small stand-in for the DELF SavedModel, for tests that cannot download the real one.

:func:`build_delf_savedmodel` saves a real TensorFlow SavedModel whose ``default`` signature has
exactly DELF's inputs (``image`` float32 [H, W, 3] in [0, 1], ``score_threshold`` float32 [],
``image_scales`` float32 [S], ``max_feature_num`` int32 []) and outputs (``locations`` float32
[N, 2] in (y, x) order, ``descriptors`` float32 [N, 40], plus ``scales`` and ``attention`` [N]).

The features are real and image-dependent, computed with TF ops only:

- grey image, average-pooled over 4 x 4 pixel cells;
- one keypoint every 16 px (4 cells), each described by the 8 x 5 cells (32 x 20 px) below and
  right of its grid corner, centred on the keypoint; patches lie wholly inside the image;
- score = 10 x the patch's standard deviation in grey levels (0-255): DELF's default threshold of
  100 keeps patches with a contrast of at least 10 grey levels;
- the strongest ``max_feature_num`` survive; descriptors are the patch values minus their mean,
  L2-normalised. ``image_scales`` is accepted and ignored (a single scale).

Because the grid is anchored at the image origin, an image translated by a multiple of 16 px
has identical descriptors at locations shifted by the translation.
"""

from __future__ import annotations

from pathlib import Path

GRID_STEP = 16
"""Pixels between neighbouring keypoints; translations by multiples of it keep descriptors."""
_CELL = 4
_PATCH_ROWS, _PATCH_COLS = 8, 5  # cells; 8 x 5 = 40 = DELF's descriptor size


def build_delf_savedmodel(directory: Path) -> Path:
    """Save the stand-in model into ``directory`` (created) and return it."""
    import tensorflow as tf

    step_cells = GRID_STEP // _CELL

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32, name="image"),
            tf.TensorSpec([], tf.float32, name="score_threshold"),
            tf.TensorSpec([None], tf.float32, name="image_scales"),
            tf.TensorSpec([], tf.int32, name="max_feature_num"),
        ]
    )
    def default(image, score_threshold, image_scales, max_feature_num):
        grey = tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1) * 255.0
        cells = tf.nn.avg_pool2d(grey[tf.newaxis, :, :, tf.newaxis], _CELL, _CELL, "VALID")
        patches = tf.image.extract_patches(
            cells,
            sizes=[1, _PATCH_ROWS, _PATCH_COLS, 1],
            strides=[1, step_cells, step_cells, 1],
            rates=[1, 1, 1, 1],
            padding="VALID",
        )[0]  # [rows, cols, 40]
        rows, cols = tf.shape(patches)[0], tf.shape(patches)[1]
        patches = tf.reshape(patches, [-1, _PATCH_ROWS * _PATCH_COLS])
        # Keypoint = centre of its patch, pixels 16i .. 16i + 31 (integers at pixel centres).
        ys = tf.cast(tf.range(rows) * GRID_STEP, tf.float32) + (_PATCH_ROWS * _CELL - 1) / 2
        xs = tf.cast(tf.range(cols) * GRID_STEP, tf.float32) + (_PATCH_COLS * _CELL - 1) / 2
        grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")
        locations = tf.reshape(tf.stack([grid_y, grid_x], axis=-1), [-1, 2])  # (y, x), as DELF

        centred = patches - tf.reduce_mean(patches, axis=1, keepdims=True)
        scores = 10.0 * tf.sqrt(tf.reduce_mean(tf.square(centred), axis=1))
        keep = scores >= score_threshold
        centred, scores, locations = (tf.boolean_mask(t, keep) for t in (centred, scores, locations))
        k = tf.minimum(max_feature_num, tf.shape(scores)[0])
        order = tf.math.top_k(scores, k=k, sorted=True).indices
        return {
            "locations": tf.gather(locations, order),
            "descriptors": tf.math.l2_normalize(tf.gather(centred, order), axis=1),
            "scales": tf.ones([k], tf.float32),
            "attention": tf.gather(scores, order),
        }

    module = tf.Module()
    module.default = default
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(directory), signatures={"default": default})
    return directory
