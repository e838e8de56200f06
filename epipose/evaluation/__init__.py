"""Every comparison with ground truth, in one place to audit.

- ``pose2d``: infer_2d's 2D error against the truth projected through each camera, shard by shard.
- ``truth``: the projected truth as triangulate's 2D input (``input_2d: ground_truth``, the paper's
  "2D GT" experiment).
- ``pseudo_labels``: triangulate's pseudo-labels against the truth (accuracy, where their error comes from).
- ``cameras``: the cameras triangulate recovered against the true ones (relative-pose errors).
- ``pose3d``: the evaluate stage's protocol: the test frames' truth, the 3D networks' metrics, the PSS clusters.

Ground truth is read only through the dataset class, ``epipose.data.h36m.H36MDataset`` (or a source
with its methods, ``epipose.data.targets.GroundTruth``); pure metric functions are ``epipose.metrics``.
The self-supervised stages import this package only to report (``tests/test_ground_truth_audit.py``).
"""
