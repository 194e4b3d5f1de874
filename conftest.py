"""Test configuration: every test and notebook runs in fast, offline mode.

The environment is set at import time, before pytest-xdist workers and nbval
start their kernels, so notebooks inherit it. Set a variable yourself to
override it, e.g. ``CNN_TOPICS_FAST=0 pytest chapters/`` for full mode.
"""

import os

os.environ.setdefault("CNN_TOPICS_FAST", "1")
os.environ.setdefault("CNN_TOPICS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
