"""Helpers for the federated-learning course: data, partitions, models, averaging, TFF, plots.

Import the submodules you need (``from data_utils import partition``); importing the package
itself is cheap and does not import TensorFlow.
"""
import warnings

# googleapis-common-protos (imported by TFF through grpc) calls setuptools' deprecated
# pkg_resources on import; the UserWarning it prints says nothing about the course.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from .env import (in_colab, read_results, repo_root, results_dir, set_seed, write_results)

__all__ = ["in_colab", "read_results", "repo_root", "results_dir", "set_seed", "write_results"]
__version__ = "0.1.0"
