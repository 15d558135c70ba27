"""Decoders: images, video, audio, arrays and records; selection, custom decoders, safety."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import tarstream
from tarstream import AudioOptions, DecodeError, VideoOptions
from tarstream.stage import upstream
from tarstream.stages.decode import Decode

av = pytest.importorskip("av")


def _decode(sample: dict[str, Any], **options: Any) -> dict[str, Any]:
    stage = Decode(**options)
    return stage.apply({"__key__": "k/0001", "__url__": "d/train-000003.tar", **sample})


# -- media built here ---------------------------------------------------------------------------
def _image(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    width, height = size
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    pixels = np.broadcast_to(x // 2 + y // 2, (height, width, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def _video(container: str, codec: str, frames: int = 30, rate: int = 10) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            pixels = np.full((48, 64, 3), i * 8, dtype=np.uint8)  # frame i is grey level 8i
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _audio(container: str, codec: str, rate: int = 16000, seconds: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 220 * t)
    pcm = (np.stack([left, right]) * 32767).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            pcm.T.reshape(1, -1).copy(), format="s16", layout="stereo"
        )
        frame.rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


# -- images ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_images_decode_to_every_form(fmt: str) -> None:
    data = _image(fmt)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert _decode({ext: data})[ext].shape == (48, 64, 3)
    np.testing.assert_array_equal(_decode({ext: data})[ext], reference)
    chw = _decode({ext: data}, layout="CHW")[ext]
    np.testing.assert_array_equal(chw, reference.transpose(2, 0, 1))
    grey = _decode({ext: data}, image="l8")[ext]
    assert grey.shape == (48, 64) and grey.dtype == np.uint8
    rgba = _decode({ext: data}, image="rgba8")[ext]
    assert rgba.shape == (48, 64, 4) and (rgba[..., 3] == 255).all()
    floats = _decode({ext: data}, image="rgb")[ext]
    assert floats.dtype == np.float32 and floats.min() >= 0 and floats.max() <= 1
    np.testing.assert_allclose(floats * 255, reference, atol=1e-3)
    tensor = _decode({ext: data}, image="torchrgb8")[ext]
    assert tuple(tensor.shape) == (3, 48, 64)
    np.testing.assert_array_equal(tensor.numpy(), reference.transpose(2, 0, 1))
    assert _decode({ext: data}, image="pil")[ext].size == (64, 48)


def test_a_target_size_decodes_jpegs_at_reduced_scale() -> None:
    data = _image("JPEG", size=(1024, 768))
    small = _decode({"jpg": data}, size=128)["jpg"]
    assert small.shape == (128, 171, 3)  # shorter side 128, aspect kept
    exact = _decode({"jpg": data}, size=(100, 50))["jpg"]
    assert exact.shape == (50, 100, 3)
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (171, 128))
    assert image.size == (256, 192)  # what the decoder works on: 1/4 scale, not 1024 px
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((171, 128)))
    assert np.abs(small.astype(int) - full.astype(int)).mean() < 4


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError, match=r"30000x30000|pixels") as caught:
        _decode({"png": _png_header_only(30000, 30000)})
    assert caught.value.shard == "d/train-000003.tar" and caught.value.member == "k/0001.png"
    with pytest.raises(DecodeError, match="more than max_pixels=1000"):
        _decode({"png": _image("PNG")}, max_pixels=1000)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) declares ``width`` x ``height``."""
    data = bytearray(_image("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_jpeg_declaring_too_many_pixels_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError, match="30000x30000 = 900000000 pixels") as caught:
        _decode({"jpg": _jpeg_declaring(30000, 30000)})
    assert caught.value.shard == "d/train-000003.tar" and caught.value.member == "k/0001.jpg"
    with pytest.raises(DecodeError, match="64x48 = 3072 pixels, more than max_pixels=1000"):
        _decode({"jpg": _image("JPEG")}, max_pixels=1000)


def test_a_jpeg_whose_header_pillow_rejects_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="cannot identify image file") as caught:
        _decode({"jpg": b"\xff\xd8\xff" + b"\x00" * 40})
    assert caught.value.member == "k/0001.jpg"


def test_a_truncated_jpeg_is_a_decode_error_naming_shard_key_and_field() -> None:
    data = _image("JPEG", size=(256, 256))
    with pytest.raises(DecodeError, match=r"train-000003\.tar: member 'k/0001\.jpg'"):
        _decode({"jpg": data[: len(data) // 2]})


# -- video and audio ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ext", "container", "codec"), [("mp4", "mp4", "libx264"), ("webm", "webm", "libvpx")]
)
def test_videos_decode_to_frames_with_fps_and_duration(
    ext: str, container: str, codec: str
) -> None:
    data = _video(container, codec)
    clip = _decode({ext: data})[ext]
    assert clip.frames.shape == (30, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(10)
    assert clip.duration == pytest.approx(3.0, abs=0.15)
    levels = clip.frames.reshape(30, -1).mean(axis=1)
    np.testing.assert_allclose(levels, np.arange(30) * 8, atol=6)  # codec tolerance


def test_video_frame_selection_and_resize() -> None:
    data = _video("mp4", "libx264")
    every = _decode({"mp4": data}, video=VideoOptions(every=5))["mp4"]
    assert every.frames.shape[0] == 6
    np.testing.assert_allclose(every.times, np.arange(0, 3, 0.5), atol=1e-6)
    spread = _decode({"mp4": data}, video=VideoOptions(count=4))["mp4"]
    np.testing.assert_allclose(spread.times, [0.0, 1.0, 1.9, 2.9], atol=1e-6)
    window = _decode({"mp4": data}, video=VideoOptions(start=1.0, end=2.0))["mp4"]
    np.testing.assert_allclose(window.times, np.arange(10, 20) / 10, atol=1e-6)
    np.testing.assert_allclose(
        window.frames.reshape(10, -1).mean(axis=1), np.arange(10, 20) * 8, atol=6
    )
    resized = _decode({"mp4": data}, video=VideoOptions(size=(32, 24), torch=True))["mp4"]
    assert tuple(resized.frames.shape) == (30, 24, 32, 3)


def test_a_corrupt_video_is_a_decode_error() -> None:
    data = _video("mp4", "libx264")
    with pytest.raises(DecodeError, match=r"'k/0001\.mp4'"):
        _decode({"mp4": data[:200] + bytes(len(data) - 200)})
    with pytest.raises(DecodeError):
        _decode({"mp4": b"not a video at all"})


def test_a_playlist_cannot_make_the_demuxer_open_files_or_urls(tmp_path: Path) -> None:
    secret = tmp_path / "secret.ts"
    secret.write_bytes(_video("mpegts", "libx264"))
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:3\n#EXTINF:3,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    for ext in ("mp4", "webm"):  # the format comes from the extension, never probed
        with pytest.raises(DecodeError):
            _decode({ext: playlist.encode()})


@pytest.mark.parametrize(
    ("ext", "container", "codec"), [("wav", "wav", "pcm_s16le"), ("flac", "flac", "flac")]
)
def test_audio_decodes_to_float_channels_by_samples(ext: str, container: str, codec: str) -> None:
    sound = _decode({ext: _audio(container, codec)})[ext]
    assert sound.rate == 16000
    assert sound.samples.shape == (2, 8000) and sound.samples.dtype == np.float32
    t = np.arange(8000) / 16000
    np.testing.assert_allclose(sound.samples[0], 0.5 * np.sin(2 * np.pi * 440 * t), atol=1e-3)
    mono = _decode({ext: _audio(container, codec)}, audio=AudioOptions(rate=8000, mono=True))[ext]
    assert mono.rate == 8000 and mono.samples.shape[0] == 1
    assert abs(mono.samples.shape[1] - 4000) <= 64


# -- arrays, records, safety --------------------------------------------------------------------
def test_records_and_arrays_decode() -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(6).reshape(2, 3))
    npz = io.BytesIO()
    np.savez(npz, a=np.ones(2), b=np.zeros(3))
    out = _decode(
        {
            "txt": "héllo".encode(),
            "json": b'{"a": [1, 2]}',
            "cls": b"7",
            "msgpack": __import__("msgpack").packb({"x": 1}),
            "npy": buf.getvalue(),
            "npz": npz.getvalue(),
            "json.gz": gzip.compress(b'{"z": 1}'),
            "bin": b"\x00\x01",
        }
    )
    assert out["txt"] == "héllo" and out["json"] == {"a": [1, 2]} and out["cls"] == 7
    assert out["msgpack"] == {"x": 1} and out["npy"].shape == (2, 3)
    assert sorted(out["npz"]) == ["a", "b"] and out["json.gz"] == {"z": 1}
    assert out["bin"] == b"\x00\x01"


@pytest.mark.parametrize(
    "data",
    [
        b'{"id":1,"t":"h\xc3\xa9"}',
        b"7",
        b'"x"',
        b" [1.5e3, null, true]\n",
        "\ufeff[2]".encode(),  # a UTF-8 byte order mark
        '{"a": "\u00e9"}'.encode("utf-16"),
        '["b"]'.encode("utf-32"),
        '{"c": 1}'.encode("utf-16-le"),  # no mark: found by its zero bytes
        b"123456789012345678901234567890",  # past 64 bits: an int, not a float
        b"[-18446744073709551617, 1e400, -0.0]",
        b'[NaN, "\\ud800"]',  # json's extensions: what the fast parser refuses
        b'{"k": 1, "k": 2}',
    ],
)
def test_json_fields_decode_as_json_loads_decodes_them(data: bytes) -> None:
    import json

    got, want = _decode({"json": data})["json"], json.loads(data)
    assert repr(got) == repr(want)  # the same types too (repr: NaN != NaN)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**30), max_value=10**30)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_document_decodes_to_what_json_loads_gives(value: Any) -> None:
    import json

    data = json.dumps(value).encode()
    assert repr(_decode({"json": data})["json"]) == repr(json.loads(data))


def test_a_column_decodes_to_what_each_value_decodes_to() -> None:
    from tarstream.codecs.decoders import RECORD_DECODERS, decode_column

    json_params = test_json_fields_decode_as_json_loads_decodes_them.pytestmark[0].args[1]
    texts = [b"", b"h\xc3\xa9llo", "\ufeffmark".encode(), b"a\x00b"]
    for kind, values in [
        ("json", json_params),
        ("text", texts),
        ("class", [b"7", b" -3\n", b"1_0"]),
    ]:
        decoder = RECORD_DECODERS[kind]
        for column in (values, values[1:2], []):  # those msgspec refuses among them, and not
            assert repr(decode_column(decoder, column)) == repr(list(map(decoder, column)))
    for kind, bad in [("json", b'{"a": '), ("text", b"\xff"), ("class", b"x")]:
        with pytest.raises(ValueError):  # UnicodeDecodeError and JSONDecodeError are ones
            decode_column(RECORD_DECODERS[kind], [b"1", bad])


def test_bad_json_is_a_decode_error_naming_the_field() -> None:
    with pytest.raises(DecodeError, match="json"):
        _decode({"json": b'{"a": '})


def test_torch_weights_decode_and_a_malicious_pth_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    assert _decode({"pth": buf.getvalue()})["pth"]["w"].tolist() == [1.0, 1.0]
    canary = tmp_path / "canary"
    evil = io.BytesIO()
    torch.save({"x": _Canary(str(canary))}, evil)
    with pytest.raises(DecodeError, match=r"k/0001\.pth"):
        _decode({"pth": evil.getvalue()})
    assert not canary.exists()


class _Canary:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_pickles_are_not_decoded_unless_named(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    payload = pickle.dumps(_Canary(str(canary)))
    out = _decode({"pkl": payload, "pickle": payload})
    assert out["pkl"] == payload and out["pickle"] == payload  # left as bytes
    assert not canary.exists()
    _decode({"pkl": payload}, unsafe=["pkl"])
    assert canary.exists()  # named explicitly: the user asked for it


def test_an_object_npy_is_refused() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DecodeError, match="pickle"):
        _decode({"npy": buf.getvalue()})


def test_a_gzip_field_is_capped() -> None:
    with pytest.raises(DecodeError, match="more than max_size=1000"):
        Decode(max_size=1000).apply({"__key__": "k", "txt.gz": gzip.compress(b"x" * 5000)})


# -- selection and custom decoders --------------------------------------------------------------
def test_only_named_fields_are_decoded_and_others_kept_or_dropped() -> None:
    sample = {"jpg": _image("JPEG"), "json": b"{}", "npy": b"not decoded", "txt": b"t"}
    out = _decode(sample, only=["jpg", "j*"])
    assert out["jpg"].shape == (48, 64, 3) and out["json"] == {}
    assert out["npy"] == b"not decoded" and out["txt"] == b"t"
    dropped = _decode(sample, only=["json"], drop_others=True)
    assert set(dropped) == {"__key__", "__url__", "json"}


def test_custom_decoders_by_name_then_pattern_then_extension() -> None:
    decoders = {"seg.png": lambda b: "exact", "*.png": lambda b: "pattern", "txt": None}
    out = _decode(
        {"seg.png": b"a", "depth.png": b"b", "png": _image("PNG"), "txt": b"raw"}, decoders=decoders
    )
    assert out["seg.png"] == "exact" and out["depth.png"] == "pattern"
    assert out["png"].shape == (48, 64, 3)  # "*.png" needs a dot: a bare png is built-in
    assert out["txt"] == b"raw"  # None: left as bytes


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="errors must be 'strict' or 'skip', got 'ignore'"):
        Decode(errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsafe takes extensions of"):
        Decode(unsafe=["exe"])
    with pytest.raises(ValueError, match="drop_others=True needs only="):
        Decode(drop_others=True)
    with pytest.raises(ValueError, match="every must be >= 1, got 0"):
        VideoOptions(every=0)


# -- strict and lenient ------------------------------------------------------------------------
def _corrupt_dataset(directory: Path, n: int = 1000, bad: int = 10) -> None:
    good = _image("JPEG", size=(8, 8))
    with tarstream.ShardWriter(str(directory / "img-%06d.tar"), max_samples=250) as w:
        for i in range(n):
            data = good if i % (n // bad) != 3 else good[: len(good) // 3]
            w.write({"__key__": f"{i:05d}", "jpg": data, "cls": i})


def test_lenient_decoding_skips_and_counts_exactly_the_corrupt_samples(tmp_path: Path) -> None:
    _corrupt_dataset(tmp_path)
    stream = tarstream.TarStream(str(tmp_path / "_img.manifest.json"))
    with pytest.raises(DecodeError, match=r"img-000000\.tar: member '00003\.jpg'"):
        list(stream.decode())
    lenient = stream.decode(errors="skip")
    keys = [s["__key__"] for s in lenient]
    assert len(keys) == 990 and "00003" not in keys and "00103" not in keys
    decode = upstream(lenient._chain, Decode)
    assert decode is not None
    assert decode.stats.skipped == 10 and decode.stats.samples == 990
    assert decode.stats.errors == {"jpg": 10}


def test_the_error_budget_raises_once_spent(tmp_path: Path) -> None:
    _corrupt_dataset(tmp_path)
    stream = tarstream.TarStream(str(tmp_path / "_img.manifest.json"))
    with pytest.raises(DecodeError, match="more than max_errors=5 samples failed"):
        list(stream.decode(errors="skip", max_errors=5))
    assert len(list(stream.decode(errors="skip", max_errors=10))) == 990


def test_lenient_decode_resumes_exactly(tmp_path: Path) -> None:
    from tarstream.testing import assert_resumable

    _corrupt_dataset(tmp_path, n=200, bad=4)

    def make() -> tarstream.Pipeline:
        stream = tarstream.TarStream(str(tmp_path / "_img.manifest.json"), seed=2).shuffle(30)
        return stream.decode("l8", errors="skip").map(lambda s: s["__key__"])

    run = assert_resumable(make, at=[0, 1, 50, 120, 195], epochs=2)
    assert len(run) == 196


@pytest.mark.parametrize(
    ("ext", "container", "codec", "rate"),
    [
        ("mp3", "mp3", "mp3", 16000),
        ("ogg", "ogg", "libopus", 48000),
        ("opus", "ogg", "libopus", 48000),
    ],
)
def test_lossy_audio_decodes_within_codec_tolerance(
    ext: str, container: str, codec: str, rate: int
) -> None:
    sound = _decode({ext: _audio(container, codec, rate=rate)})[ext]
    assert sound.rate == rate and sound.samples.dtype == np.float32
    assert sound.samples.shape[0] == 2
    assert abs(sound.samples.shape[1] - rate // 2) <= rate // 20  # 0.5 s, codec padding aside
    peaks = np.abs(sound.samples).max(axis=1)
    np.testing.assert_allclose(peaks, [0.5, 0.25], atol=0.06)  # the two tones' amplitudes


def test_a_video_converts_only_the_frames_it_keeps_within_a_pixel_budget() -> None:
    data = _video("mp4", "libx264")  # 30 frames
    four = 4 * 32 * 24
    kept = _decode({"mp4": data}, video=VideoOptions(count=4, size=(32, 24), max_pixels=four))[
        "mp4"
    ]
    np.testing.assert_allclose(kept.times, [0.0, 1.0, 1.9, 2.9], atol=1e-6)
    with pytest.raises(DecodeError, match="more than max_pixels=3072"):
        _decode({"mp4": data}, video=VideoOptions(size=(32, 24), max_pixels=four))
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        VideoOptions(max_pixels=0)
