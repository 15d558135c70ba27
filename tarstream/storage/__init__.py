"""Bytes from anywhere: URLs, local files, ``pipe:`` commands, remote reads over fsspec,
the retry policy, the storage settings and the local shard cache."""
