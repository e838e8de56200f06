"""Dataset readers and writers: Human3.6M and MPII native layouts, frame shards, synthetic data."""
