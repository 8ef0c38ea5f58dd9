"""retrieval-kd: distil retrieval models from stored, versioned teacher scores."""

from retrieval_kd.cpu import pin_openblas_core
from retrieval_kd.numba_cache import use_run_cache

__version__ = "0.1.0"

use_run_cache()  # before anything imports ranx (retrieval_kd/numba_cache.py says why)
pin_openblas_core()  # before anything imports faiss (retrieval_kd/cpu.py says why)
