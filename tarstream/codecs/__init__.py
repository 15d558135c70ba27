"""Field values: one table of extensions (``extensions``) for encoders (``encode``) and
decoders (``decoders``), images (Pillow) and audio/video (PyAV)."""
