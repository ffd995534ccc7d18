"""Helpers for the federated-learning course: data, partitions, models, averaging, TFF, plots.

Import the submodules you need (``from data_utils import partition``); importing the package
itself is cheap and does not import TensorFlow.
"""
from .env import (in_colab, read_results, repo_root, results_dir, set_seed, write_results)

__all__ = ["in_colab", "read_results", "repo_root", "results_dir", "set_seed", "write_results"]
__version__ = "0.1.0"
