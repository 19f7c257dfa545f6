"""StreamFuse: real-time fusion of paired infrared and visible streams with DIDFuse."""

__version__ = "0.1.0"
