"""EmojiCam: your face, as the emoji of your expression, on any video call."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emojicam")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"
