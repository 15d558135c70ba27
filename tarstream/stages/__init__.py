"""Samples to batches: transforms, slicing, the shuffle buffer, decoding, batching and
the memory batches are stacked into."""
