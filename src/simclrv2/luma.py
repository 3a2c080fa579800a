"""The luma weights of ``tf.image.rgb_to_grayscale`` (ITU-R BT.601), shared by the augmentation's
random grayscale and the data's exact RGB-to-grey conversion, so that both mean the same grey."""

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # R, G, B
