"""Dataset readers (Human3.6M and MPII native layouts) and what the method needs of them: frame shards,
person boxes, crops, training targets, augmentation, pose tables."""
