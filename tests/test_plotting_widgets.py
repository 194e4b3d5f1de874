"""utils.plotting and utils.widgets: figures and the "Try it" pattern."""

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from utils import plotting, widgets


def test_to_numpy_image_layouts():
    assert plotting.to_numpy_image(torch.rand(3, 5, 7)).shape == (5, 7, 3)
    assert plotting.to_numpy_image(torch.rand(1, 5, 7)).shape == (5, 7)
    assert plotting.to_numpy_image(np.full((4, 4), 2.0)).max() == 1.0
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        plotting.to_numpy_image(torch.rand(2, 5, 7))
    with pytest.raises(TypeError):
        plotting.to_numpy_image([[0.0]])


def test_show_images_grid_and_title_check():
    fig = plotting.show_images(torch.rand(5, 3, 8, 8), titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6 and fig.axes[4].get_title() == "e"
    plt.close(fig)
    with pytest.raises(ValueError, match="one per image"):
        plotting.show_images([torch.rand(3, 8, 8)], titles=["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        plotting.show_images([])


def test_before_after_shows_the_magnified_difference():
    a = torch.zeros(3, 4, 4)
    b = a + 0.01
    fig = plotting.before_after(a, b, magnify=10)
    diff = fig.axes[2].images[0].get_array()
    assert np.allclose(diff, 0.6)
    plt.close(fig)
    with pytest.raises(ValueError, match="same shape"):
        plotting.before_after(a, torch.zeros(3, 5, 5))


def test_plot_curves_draws_one_line_per_label():
    fig = plotting.plot_curves({"adam": [3, 2, 1], "lbfgs": [3, 1, 0.5]}, logy=True)
    assert len(fig.axes[0].lines) == 2
    plt.close(fig)


def test_show_source_displays_the_real_code():
    code = plotting.show_source(plotting.to_numpy_image)
    assert "def to_numpy_image" in code.data
    with pytest.raises(TypeError, match="Cannot show the source"):
        plotting.show_source(42)


def test_try_it_draws_static_figure_then_redraws_live(monkeypatch):
    calls = []

    def draw(freq):
        calls.append(freq)
        fig, ax = plt.subplots()
        ax.plot(np.sin(freq * np.linspace(0, 6, 50)))
        return fig

    monkeypatch.setattr(widgets, "display", lambda *a, **k: None)
    slider = w.FloatSlider(value=1.0, min=0.5, max=5.0)
    panel = widgets.try_it(draw, freq=slider)
    assert isinstance(panel, w.VBox) and calls == [1.0]
    slider.value = 2.0
    assert calls == [1.0, 2.0]


def test_run_button_redraws_only_on_click(monkeypatch):
    calls = []

    def draw(n):
        calls.append(n)
        return plt.figure()

    monkeypatch.setattr(widgets, "display", lambda *a, **k: None)
    slider = w.IntSlider(value=1)
    panel = widgets.live_figure(draw, run_button=True, n=slider)
    slider.value = 3
    assert calls == []
    button = [c for c in panel.children[0].children if isinstance(c, w.Button)][0]
    button.click()
    assert calls == [3]


def test_live_figure_rejects_bad_controls():
    with pytest.raises(TypeError, match="value widget"):
        widgets.live_figure(lambda x: plt.figure(), x=3)
    with pytest.raises(ValueError, match="at least one control"):
        widgets.live_figure(lambda: plt.figure())
    with pytest.raises(TypeError, match="draw must be a function"):
        widgets.live_figure("draw", x=w.IntSlider())
