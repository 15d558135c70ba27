"""Bytes on disk: the tar header (read and write), the scan, the bulk parser, sample
grouping, keys, the sidecar, the manifest, and reading through a sidecar."""
