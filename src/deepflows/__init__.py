"""deepflows: reproducible pipelines for deep-learning systems in genomics, imaging, audio and text."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepflows")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
