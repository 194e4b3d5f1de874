"""CNN Topics: the helper package behind the course's chapters and labs.

One module per chapter (``locality``, ``topology``, ``transfer``, ``visualize``,
``style``, ``adversarial``), each holding that chapter's algorithms, figures and
"Try it" widget, on a small shared core: settings (``config``), generic figures
(``plotting``) and the Try-it machinery (``widgets``); images and datasets
(``assets``); network mechanics — checks, named-layer hooks, modes, the training
loop, cached models (``core``); the course's networks (``models``). Imports run
only downwards, and no chapter module imports another. ``labs`` and ``report``
are the instructors' command-line tools.
"""

__version__ = "0.1.0"
