"""Order on references: shard specs, segments of shards, the shard list, the shard
shuffle and the rank and worker splits; pure functions of seed, epoch and world."""
