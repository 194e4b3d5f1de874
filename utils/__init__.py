"""CNN Topics: the helper package behind the course's chapters and labs.

One small module per chapter (``locality``, ``topology``, ``transfer``,
``visualize``, ``style``, ``adversarial``) and shared modules for settings
(``config``), images and datasets (``assets``), models and training
(``models``), figures (``plotting``) and interactive widgets (``widgets``).
"""

__version__ = "0.1.0"
