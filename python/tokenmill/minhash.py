"""The parts of near-duplicate detection, for use outside the `dedup` stage.

Signatures, band keys, candidate pairs and clusters, each one call over
Arrow or numpy arrays, computed in Rust with the GIL released::

    import pyarrow as pa
    from tokenmill import minhash

    texts = pa.array(["the same licence text here ...", "the same licence text here ..."])
    signatures, too_short = minhash.signatures(texts)            # uint64 [n, 128]
    bands, rows = minhash.optimal_bands(0.8, 128)                 # (9, 13)
    pairs = minhash.candidate_pairs(minhash.band_keys(signatures, bands, rows))
    similar = pairs[minhash.estimated_jaccard(signatures, pairs) >= 0.8]
    clusters = minhash.connected_components(len(texts), similar)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tokenmill._core import band_keys, connected_components, optimal_bands, shingle_set
from tokenmill._core import lsh_candidate_pairs as candidate_pairs
from tokenmill._core import minhash_signatures as signatures

__all__ = [
    "band_keys",
    "candidate_pairs",
    "connected_components",
    "estimated_jaccard",
    "exact_jaccard",
    "optimal_bands",
    "shingle_set",
    "signatures",
]


def estimated_jaccard(
    signatures: npt.NDArray[np.uint64], pairs: npt.NDArray[np.uint64]
) -> npt.NDArray[np.float64]:
    """For each pair `[k, 2]`, the fraction of agreeing signature positions."""
    if len(pairs) == 0:
        return np.zeros(0)
    left = signatures[pairs[:, 0].astype(np.intp)]
    right = signatures[pairs[:, 1].astype(np.intp)]
    result: npt.NDArray[np.float64] = (left == right).mean(axis=1)
    return result


def exact_jaccard(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> float:
    """Jaccard similarity of two shingle sets (as from :func:`shingle_set`)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    both = len(np.intersect1d(a, b, assume_unique=True))
    return both / (len(a) + len(b) - both)
