"""Synthetic data, not part of the method: procedural bodies and motion, rooms, a camera rig, a renderer,
writers of the native Human3.6M and MPII layouts (the ``synthesize`` stage), and 2D detections
simulated from procedural ground truth (tests and benchmarks)."""
