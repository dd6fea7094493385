"""Training, data, benchmark and generator scripts for bitnn.

Run them from the repository root as modules, e.g. ``python3 -m tools.train_lm
--help``; ``tools.common`` holds what they share.
"""
