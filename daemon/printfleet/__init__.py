"""printfleet: watch resin 3D printer fleets and tell people and machines when something changes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("printfleet")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
