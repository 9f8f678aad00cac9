"""VGG-style CNNs for 48x48 grayscale faces.

The network takes raw pixel values (0..255, float) and scales them itself,
so the exported model's uint8 input is exactly the image.
"""

from __future__ import annotations

# Keras is imported inside the builders, so ARCHITECTURES (which
# train/unfold.py and the tests read) needs no TensorFlow.

# (filters, convs) per stage; each stage ends in 2x2 max-pooling.
ARCHITECTURES: dict[str, list[tuple[int, int]]] = {
    "small": [(32, 2), (64, 2), (128, 1), (256, 1)],
    "base": [(64, 2), (128, 2), (256, 1), (512, 1)],
    "large": [(64, 2), (128, 2), (256, 2), (512, 2)],  # 4.8 M: over the 3 MB file limit in int8
    "deep": [(64, 2), (128, 2), (256, 2), (256, 2)],  # two convs per block that still fit 3 MB
}


def build_model(arch: str = "base", dropout: float = 0.4):
    import keras
    from keras import layers

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHITECTURES)}")
    inputs = keras.Input((48, 48, 1), name="face_gray")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    for stage, (filters, convs) in enumerate(ARCHITECTURES[arch]):
        for i in range(convs):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"conv{stage}_{i}"
            )(x)
            x = layers.BatchNormalization(name=f"bn{stage}_{i}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(256, use_bias=False, name="fc")(x)
    x = layers.BatchNormalization(name="bn_fc")(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(7, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=f"emojicam_{arch}")


def with_flip_average(model):
    """Wrap ``model`` so it averages its output over the image and its mirror.

    Flip averaging is baked into the exported file, so every consumer of
    ``emotion.tflite`` gets it without extra code.
    """
    import keras
    from keras import layers

    inputs = keras.Input((48, 48, 1), name="face_gray")
    flipped = layers.Lambda(lambda t: t[:, :, ::-1, :], name="mirror")(inputs)
    avg = layers.Average(name="flip_average")([model(inputs), model(flipped)])
    return keras.Model(inputs, avg, name=model.name + "_flipavg")
