"""Sub-commands of the `streamfuse` command line, one module each."""
