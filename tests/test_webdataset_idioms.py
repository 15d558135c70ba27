"""webdataset's pipeline idioms, run by webdataset and by tarstream on the same shards: the
same results (the README's "Coming from webdataset" table maps one to the other)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

import tarstream
from tarstream.write.indexer import index_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two shards of 12 samples: a JPEG or PNG (grey or colour), cls, json, txt; one
    shard's extensions in upper case, as cameras and some tools write them."""
    directory = tmp_path_factory.mktemp("idioms")
    rng = np.random.default_rng(1)
    for number in range(2):
        with tarfile.open(directory / f"d-{number:06d}.tar", "w") as tf:
            for i in range(12):
                grey = i % 3 == 0
                shape = (12, 16) if grey else (12, 16, 3)
                image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8))
                kind = "png" if i % 2 else "jpg"
                encoded = io.BytesIO()
                image.save(encoded, format="PNG" if kind == "png" else "JPEG")
                fields = {
                    kind: encoded.getvalue(),
                    "cls": str(i % 4).encode(),
                    "json": f'{{"i": {i}, "shard": {number}}}'.encode(),
                    "txt": f"caption {number}/{i}".encode(),
                }
                for field, data in sorted(fields.items()):
                    ext = field.upper() if number == 1 else field
                    info = tarfile.TarInfo(f"s{number}-{i:03d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return str(directory / "d-{000000..000001}.tar")


def _same(a: Any, b: Any) -> bool:
    """Equal values, arrays and PIL images compared by content."""
    if isinstance(a, Image.Image) or isinstance(b, Image.Image):
        return (
            isinstance(a, Image.Image)
            and isinstance(b, Image.Image)
            and a.mode == b.mode
            and np.array_equal(np.asarray(a), np.asarray(b))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        # Fields, and the key where both have it: webdataset adds __local_path__, and its
        # rename(keep=False) drops __key__ and __url__ where tarstream keeps them.
        keys = {k for k in [*a, *b] if not k.startswith("__")}
        keys |= {"__key__"} & a.keys() & b.keys()
        return all(_same(a.get(k), b.get(k)) for k in keys)
    return bool(a == b)


def _flip(sample: dict[str, Any]) -> dict[str, Any]:
    return {**sample, "txt": sample["txt"][::-1]}


def _tenfold(data: bytes) -> int:
    return int(data) * 10


def _shout(key: str, data: bytes) -> str | None:
    """A webdataset handler: the text fields upper-cased, the others passed on."""
    return data.decode().upper() if key == ".txt" else None


def _has_png(sample: dict[str, Any]) -> bool:
    return "png" in sample


Idiom = tuple[Callable[[Any], Any], Callable[[Any], Any]]
#: (webdataset's spelling, tarstream's spelling) of one idiom, each given the dataset.
IDIOMS: dict[str, Idiom] = {
    "decode pil, to_tuple alternatives": (
        lambda d: d.decode("pil").to_tuple("jpg;png", "cls"),
        lambda d: d.decode("pil").to_tuple("jpg;png", "cls"),
    ),
    "to_tuple as one string": (
        lambda d: d.decode("pil").to_tuple("png;jpg cls json"),
        lambda d: d.decode("pil").to_tuple("png;jpg cls json"),
    ),
    "decode rgb8 arrays": (
        lambda d: d.decode("rgb8").to_tuple("jpg;png", "cls"),
        lambda d: d.decode("rgb8").to_tuple("jpg;png", "cls"),
    ),
    "decode l8 arrays": (
        lambda d: d.decode("l8").to_tuple("jpg;png"),
        lambda d: d.decode("l8").to_tuple("jpg;png"),
    ),
    "decode float rgb": (
        lambda d: d.decode("rgb").to_tuple("jpg;png"),
        lambda d: d.decode("rgb").to_tuple("jpg;png"),
    ),
    "decode only one field, as a string": (
        lambda d: d.decode(only="cls").to_tuple("cls", "txt"),
        lambda d: d.decode(only="cls").to_tuple("cls", "txt"),
    ),
    "rename, keeping the rest": (
        lambda d: d.decode("pil").rename(image="jpg;png", label="cls"),
        lambda d: d.decode("pil").rename(image="jpg;png", label="cls"),
    ),
    "rename, keep=False": (
        lambda d: d.decode("pil").rename(keep=False, image="jpg;png", label="cls"),
        lambda d: d.decode("pil").rename(keep=False, image="jpg;png", label="cls"),
    ),
    "map over samples": (
        lambda d: d.decode().map(_flip).to_tuple("txt"),
        lambda d: d.decode(only="txt").map(_flip).to_tuple("txt"),
    ),
    "select(predicate) is filter": (
        lambda d: d.select(_has_png).to_tuple("__key__"),
        lambda d: d.filter(_has_png).to_tuple("__key__"),
    ),
    "map_tuple after to_tuple": (
        lambda d: d.decode().to_tuple("json", "cls").map_tuple(lambda j: j["i"], lambda c: c + 1),
        lambda d: (
            d.decode(only="json cls").to_tuple("json", "cls").map(lambda t: (t[0]["i"], t[1] + 1))
        ),
    ),
    "decode with handler functions before the image form": (
        lambda d: d.decode(wds.handle_extension("cls", _tenfold), _shout, "rgb8").to_tuple(
            "jpg;png", "cls", "txt"
        ),
        lambda d: d.decode(wds.handle_extension("cls", _tenfold), _shout, "rgb8").to_tuple(
            "jpg;png", "cls", "txt"
        ),
    ),
    "slice is take": (
        lambda d: d.to_tuple("__key__").slice(5),
        lambda d: d.to_tuple("__key__").take(5),
    ),
}


@pytest.mark.parametrize("idiom", sorted(IDIOMS))
def test_a_webdataset_idiom_gives_the_same_results_in_tarstream(shards: str, idiom: str) -> None:
    theirs, ours = IDIOMS[idiom]
    expected = list(theirs(wds.WebDataset(shards, shardshuffle=False)))
    got = list(ours(tarstream.TarStream(shards)))
    assert len(expected) == 24 or idiom in ("select(predicate) is filter", "slice is take")
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert _same(a, b), (idiom, a, b)


def test_a_shuffle_and_batch_deliver_the_same_samples(shards: str) -> None:
    theirs = wds.WebDataset(shards, shardshuffle=False).shuffle(10).to_tuple("__key__")
    ours = tarstream.TarStream(shards).shuffle(10).to_tuple("__key__").batch(5, partial=True)
    assert sorted(k for (k,) in theirs) == sorted(k for batch in ours for k in batch[0])


def test_upper_case_extensions_keep_their_case_when_asked(shards: str) -> None:
    stream = tarstream.TarStream(shards, lowercase_fields=False)
    fields = {f for s in stream for f in s if not f.startswith("__")}
    assert {"jpg", "JPG", "cls", "CLS"} <= fields


def test_two_fields_that_differ_only_in_case_are_an_error_not_one_lost(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "case.tar", "w") as tf:
        for name in ("0001.jpg", "0001.JPG"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    index_shards(str(tmp_path / "case.tar"))
    for sidecars in ("auto", "ignore"):
        stream = tarstream.TarStream(str(tmp_path / "case.tar"), sidecars=sidecars)  # type: ignore[arg-type]
        with pytest.raises(tarstream.ShardFormatError, match="jpg"):
            list(stream)
        kept = tarstream.TarStream(
            str(tmp_path / "case.tar"),
            sidecars=sidecars,  # type: ignore[arg-type]
            lowercase_fields=False,
        )
        assert [sorted(s) for s in kept] == [["JPG", "__key__", "__url__", "jpg"]]


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda d: d.decode(3), "image form .a string. or handler functions"),
        (lambda d: d.decode("pil", "rgb8"), "one image form"),
        (lambda d: d.decode(image=len), "image form is a string"),
        (lambda d: d.rename(keep="no", image="jpg"), "keep must be True or False"),
        (lambda d: d.rename(image=["jpg"]), "old field name"),
        (lambda d: d.to_tuple("jpg", 3), "field names as strings"),
        (lambda d: d.select(_has_png), "use filter"),
        (lambda d: d.decode(only=[1]), "only takes field names"),
    ],
)
def test_wrong_argument_types_are_clear_errors(
    shards: str, make: Callable[[Any], Any], said: str
) -> None:
    with pytest.raises(tarstream.ArgumentError, match=said) as raised:
        make(tarstream.TarStream(shards))
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, ValueError)
