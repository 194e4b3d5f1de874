"""utils.config: modes, seeds, device and cache folder."""

import random

import numpy as np
import pytest
import torch

from utils import config


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("ON", True),
                                             ("0", False), ("", False), ("no", False)])
def test_fast_mode_reads_environment(monkeypatch, value, expected):
    monkeypatch.setenv("CNN_TOPICS_FAST", value)
    assert config.fast_mode() is expected


def test_unset_flags_are_false(monkeypatch):
    monkeypatch.delenv("CNN_TOPICS_FAST", raising=False)
    monkeypatch.delenv("CNN_TOPICS_OFFLINE", raising=False)
    assert config.fast_mode() is False and config.offline() is False


def test_ambiguous_flag_is_refused_with_a_sentence(monkeypatch):
    monkeypatch.setenv("CNN_TOPICS_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="CNN_TOPICS_OFFLINE='maybe' is not a boolean"):
        config.offline()


def test_pick_follows_the_mode(monkeypatch):
    monkeypatch.setenv("CNN_TOPICS_FAST", "1")
    assert config.pick(full=300, fast=20) == 20
    monkeypatch.setenv("CNN_TOPICS_FAST", "0")
    assert config.pick(full=300, fast=20) == 300


def test_seed_everything_makes_all_generators_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    config.seed_everything(7)
    first = draw()
    config.seed_everything(7)
    assert draw() == first


@pytest.mark.parametrize("seed, error", [(1.5, TypeError), ("0", TypeError), (True, TypeError),
                                         (-1, ValueError), (2**32, ValueError)])
def test_seed_everything_rejects_bad_seeds(seed, error):
    with pytest.raises(error, match="seed"):
        config.seed_everything(seed)


def test_device_is_a_torch_device():
    dev = config.device()
    assert isinstance(dev, torch.device)
    assert dev.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        assert dev.type != "cuda"


def test_data_dir_uses_environment_and_creates_it(monkeypatch, tmp_path):
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv("CNN_TOPICS_DATA", str(target))
    assert config.data_dir() == target and target.is_dir()


def test_data_dir_defaults_to_user_cache(monkeypatch):
    monkeypatch.delenv("CNN_TOPICS_DATA", raising=False)
    assert "cnn-topics" in str(config.data_dir())


def test_fallback_notice_prints_once_and_is_remembered(capsys):
    config.fallback_notice("test:once", "thing A replaced by thing B")
    config.fallback_notice("test:once", "thing A replaced by thing B")
    assert capsys.readouterr().out.count("thing A replaced by thing B") == 1
    assert config.active_fallbacks()["test:once"] == "thing A replaced by thing B"
