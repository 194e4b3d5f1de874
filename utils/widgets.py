"""Interactive "Try it" front-ends: one pattern for every chapter.

A chapter's widget is a *draw function* ``draw(**values) -> Figure`` plus
ipywidgets controls, one per argument. :func:`try_it` first shows the static
figure for the controls' initial values — this is what the published HTML
page shows, since no Python runs there — and then the live controls, which
redraw into their own output area when used on Colab, Binder or a laptop.

Example
-------
>>> import ipywidgets as w
>>> def draw(freq):
...     fig, ax = plt.subplots(); ax.plot(np.sin(freq * np.linspace(0, 6, 200))); return fig
>>> panel = try_it(draw, freq=w.FloatSlider(value=1.0, min=0.5, max=5.0))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure

__all__ = ["try_it", "live_figure"]


def _values(controls: dict[str, widgets.ValueWidget]) -> dict[str, object]:
    return {name: control.value for name, control in controls.items()}


def live_figure(
    draw: Callable[..., Figure],
    run_button: bool = False,
    **controls: widgets.ValueWidget,
) -> widgets.VBox:
    """Controls above an output area in which ``draw(**values)`` is redrawn.

    Parameters
    ----------
    draw : callable
        Takes one keyword argument per control and returns a matplotlib Figure.
    run_button : bool, default=False
        Redraw only when a "Run" button is pressed (for slow draws such as a
        style-transfer optimisation) instead of on every change.
    **controls : ipywidgets value widgets
        One per argument of ``draw``, e.g. ``eps=FloatSlider(...)``.
    """
    if not callable(draw):
        raise TypeError(f"draw must be a function returning a Figure, got {type(draw).__name__}.")
    if not controls:
        raise ValueError("live_figure needs at least one control, e.g. eps=FloatSlider(...).")
    for name, control in controls.items():
        if not isinstance(control, widgets.ValueWidget):
            raise TypeError(f"Control {name!r} must be an ipywidgets value widget, "
                            f"got {type(control).__name__}.")
    out = widgets.Output()
    hint = "Press Run to draw." if run_button else "Move a control to redraw."

    def redraw(_=None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = draw(**_values(controls))
            plt.show()
            plt.close(fig)

    boxes: list[widgets.Widget] = list(controls.values())
    if run_button:
        button = widgets.Button(description="Run", button_style="primary", icon="play")
        button.on_click(redraw)
        boxes.append(button)
    else:
        for control in controls.values():
            control.observe(redraw, names="value")
    panel = widgets.VBox([widgets.HBox(boxes, layout=widgets.Layout(flex_flow="row wrap")),
                          widgets.HTML(f"<i>{hint}</i>"), out])
    return panel.add_class("try-it")  # lets the site's tests find every "Try it" panel


def try_it(
    draw: Callable[..., Figure],
    run_button: bool = False,
    **controls: widgets.ValueWidget,
) -> widgets.VBox:
    """Show the static figure for the controls' initial values, then the live widget.

    The static figure keeps the published page complete without a kernel; the
    returned widget (displayed as the cell's result) is for live use.
    """
    fig = draw(**_values(controls))
    display(fig)
    plt.close(fig)
    return live_figure(draw, run_button=run_button, **controls)
