"""Making shards: the writer, the sources it reads from (directories, index files,
existing shards), progress, and sidecars for existing shards."""
