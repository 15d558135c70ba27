"""References to samples: reading one shard, and the reader stage over a plan."""
