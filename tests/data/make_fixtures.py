"""Build the tiny test models in this folder (needs the ``train`` extra).

    python tests/data/make_fixtures.py

``wrong_shape.tflite`` takes 32x32 input (EmojiCam needs 48x48) so tests can
check that a wrong model is refused with a clear message.
"""

from pathlib import Path

import keras
import tensorflow as tf

HERE = Path(__file__).parent

inputs = keras.Input((32, 32, 1))
x = keras.layers.Conv2D(2, 3)(inputs)
x = keras.layers.GlobalAveragePooling2D()(x)
outputs = keras.layers.Dense(7, activation="softmax")(x)
model = keras.Model(inputs, outputs)
(HERE / "wrong_shape.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
