"""The pure core: plain data classes and functions over them, no I/O."""
