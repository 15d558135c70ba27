"""Video and audio decoding through PyAV (the ``[av]`` extra), from memory only.

The container format is chosen from the field's extension (``VIDEO_FORMATS`` and
``AUDIO_FORMATS`` in ``tarstream.codecs.extensions``), never probed, and nested opens are
refused (an empty protocol whitelist), so a sample can never make the demuxer read a
playlist, another file or a URL.

A video decodes to ``Video(frames, fps, duration, times)``: uint8 frames T x H x W x 3 (numpy,
or a torch tensor), the stream's frame rate and duration in seconds, and each kept frame's
time. ``VideoOptions`` selects frames (a time window, every n-th, or a number spread
evenly) and resizes them. Audio decodes to ``Audio(samples, rate)``: float32 channels x
samples, optionally resampled and mixed to mono (``AudioOptions``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .extensions import AUDIO_FORMATS, VIDEO_FORMATS

__all__ = [
    "Audio",
    "AudioOptions",
    "Video",
    "VideoOptions",
    "decode_audio",
    "decode_video",
]

_SAFE_OPTIONS = {"protocol_whitelist": "none"}  # no nested opens of files or URLs


class Video(NamedTuple):
    frames: Any
    fps: float
    duration: float
    times: np.ndarray


class Audio(NamedTuple):
    samples: Any
    rate: int


@dataclass(frozen=True)
class VideoOptions:
    """Which frames to keep and how.

    Args:
        start, end: a time window in seconds (frames with ``start <= time < end``).
        every: keep every n-th frame of the window.
        count: keep this many frames spread evenly over the window (after ``every``).
        size: resize frames to (width, height).
        torch: frames as a torch tensor rather than a numpy array.
        max_pixels: the most pixels the kept frames may hold in all (frames x height x
            width, after resizing); a video that would keep more is refused as soon as it
            would, before the frames past the limit are converted. Default 2**28 (128
            frames of 1920 x 1080, 768 MiB as RGB).
    """

    start: float | None = None
    end: float | None = None
    every: int = 1
    count: int | None = None
    size: tuple[int, int] | None = None
    torch: bool = False
    max_pixels: int = 1 << 28

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end must be after start, got {self.start}..{self.end}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be a (width, height) pair, got {self.size!r}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")


@dataclass(frozen=True)
class AudioOptions:
    """Resample to ``rate`` (None: keep), mix to ``mono``, ``torch`` for a tensor."""

    rate: int | None = None
    mono: bool = False
    torch: bool = False

    def __post_init__(self) -> None:
        if self.rate is not None and self.rate < 1:
            raise ValueError(f"rate must be >= 1, got {self.rate}")


def _open(data: bytes, fmt: str) -> Any:
    import av

    return av.open(io.BytesIO(data), format=fmt, options=_SAFE_OPTIONS)


def decode_video(data: bytes, ext: str, options: VideoOptions | None = None) -> Video:
    """Decode the video in ``data`` (a ``VIDEO_FORMATS`` extension) as ``options`` say.

    Only the frames kept are converted to RGB. With ``count`` and no time window, which
    frames to keep is worked out from the stream's frame count before decoding (and the
    video decoded again if that count was wrong); otherwise every candidate is converted
    and ``count`` of them kept, all within ``max_pixels``.
    """
    options = options or VideoOptions()
    with _open(data, VIDEO_FORMATS[ext]) as container:
        stream = container.streams.video[0]
        predicted = _candidates(stream.frames, options)
    chosen = _chosen(predicted, options)
    fps, duration, frames, times, seen = _decode_frames(data, ext, options, chosen)
    if chosen is not None and seen != predicted:  # the stream's frame count was wrong
        chosen = _chosen(seen, options)
        fps, duration, frames, times, seen = _decode_frames(data, ext, options, chosen)
    if chosen is None and options.count is not None and len(frames) > options.count:
        keep = np.linspace(0, len(frames) - 1, options.count).round().astype(int)
        frames, times = [frames[i] for i in keep], [times[i] for i in keep]
    if not frames:
        raise ValueError("no frames decoded (empty stream or time window)")
    array = np.stack(frames)
    return Video(_maybe_torch(array, options.torch), fps, duration, np.asarray(times))


def _candidates(frames: int | None, options: VideoOptions) -> int | None:
    """How many frames ``every`` leaves of a stream of ``frames`` (None: not known ahead)."""
    if not frames or options.count is None or options.start is not None or options.end:
        return None
    return -(-frames // options.every)


def _chosen(candidates: int | None, options: VideoOptions) -> set[int] | None:
    if candidates is None or options.count is None or candidates <= options.count:
        return None if candidates is None or options.count is None else set(range(candidates))
    return set(np.linspace(0, candidates - 1, options.count).round().astype(int).tolist())


def _decode_frames(
    data: bytes, ext: str, options: VideoOptions, chosen: set[int] | None
) -> tuple[float, float, list[np.ndarray], list[float], int]:
    """(fps, duration, the frames converted, their times, the number of candidates):
    candidates are the frames in the window that ``every`` keeps; of them, those in
    ``chosen`` (None: all) are converted, within ``options.max_pixels``."""
    with _open(data, VIDEO_FORMATS[ext]) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        duration = _duration(stream, container)
        if options.start:
            # Seek to the keyframe before start; frames before it are skipped below.
            container.seek(int(options.start / stream.time_base), stream=stream)
        frames, times = [], []
        index = candidate = pixels = 0
        width, height = options.size or (None, None)
        for frame in container.decode(stream):
            time = float(frame.time) if frame.time is not None else index / (fps or 1)
            if options.start is not None and time < options.start:
                continue
            if options.end is not None and time >= options.end:
                break
            if index % options.every == 0:
                if chosen is None or candidate in chosen:
                    pixels += (width or frame.width) * (height or frame.height)
                    if pixels > options.max_pixels:
                        raise ValueError(
                            f"the frames kept hold more than max_pixels={options.max_pixels} "
                            "pixels (VideoOptions: fewer frames, a smaller size or a window)"
                        )
                    frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                    times.append(time)
                candidate += 1
            index += 1
    return fps, duration, frames, times, candidate


def _duration(stream: Any, container: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return float(container.duration or 0) / 1_000_000


def decode_audio(data: bytes, ext: str, options: AudioOptions | None = None) -> Audio:
    """Decode the audio in ``data`` (an ``AUDIO_FORMATS`` extension) to float32 channels x
    samples, resampled and mixed as ``options`` say."""
    import av

    options = options or AudioOptions()
    with _open(data, AUDIO_FORMATS[ext]) as container:
        stream = container.streams.audio[0]
        rate = options.rate or stream.rate
        layout = "mono" if options.mono else stream.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        parts: list[np.ndarray] = []
        for frame in container.decode(stream):
            parts.extend(f.to_ndarray() for f in resampler.resample(frame))
        parts.extend(f.to_ndarray() for f in resampler.resample(None))
    if not parts:
        raise ValueError("no audio decoded (empty stream)")
    samples = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    return Audio(_maybe_torch(samples, options.torch), rate)


def _maybe_torch(array: np.ndarray, torch_out: bool) -> Any:
    if not torch_out:
        return array
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))
