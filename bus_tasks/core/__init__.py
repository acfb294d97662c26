"""The pure core: the task model and the merged view. No I/O, no broker library."""
