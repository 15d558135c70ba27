"""Running pipelines: the pipeline and its fluent chain, the stream over shards, the
DataLoader integration, the resume state and elastic resume, and the worker-to-trainer
transport."""
