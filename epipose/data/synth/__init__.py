"""Synthetic Human3.6M-/MPII-layout data: procedural motion, a camera rig, a renderer, writers."""
