"""Training code for EmojiCam's expression classifier.

Optional dependency group ``train`` (TensorFlow/Keras, matplotlib, tqdm).
The runtime package ``emojicam`` never imports anything from here.
"""

#: Model output order. The runtime checks the labels file written beside the
#: model against its own ``Emotion`` enum, so a reordered model cannot load.
CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
