"""Failure analysis: which training samples sit at a prediction's top-k candidate locations.

The default gallery is the training locations with duplicates removed, so each
top-k candidate is (up to float rounding) the location of a training sample.
:class:`SampleLocator` finds those samples by geodesic distance, within a
tolerance in metres, instead of matching formatted coordinate strings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from swclip.geo import check_latlon, m_to_chord, unit_vectors

MATCH_TOLERANCE_M = 0.5  # gallery coordinates are the table's, rounded at most to 1e-7° (~1 cm)


class SampleLocator:
    """Rows of a sample table by location. latlon: (N, 2) degrees; where several rows share a spot
    (rounded to 1e-7°), the first row answers."""

    def __init__(self, latlon: Any):
        latlon = np.asarray(latlon, dtype=np.float64)
        check_latlon(latlon, "sample latlon")
        _, first = np.unique(np.round(latlon, 7), axis=0, return_index=True)
        self.rows = np.sort(first)  # (U,) table rows, one per distinct spot
        self.tree = cKDTree(unit_vectors(latlon[self.rows]))

    def find(self, query_latlon: Any, tol_m: float = MATCH_TOLERANCE_M) -> np.ndarray:
        """(K, 2) degrees -> (K,) int64 table rows, -1 where no sample lies within ``tol_m`` metres."""
        q = np.asarray(query_latlon, dtype=np.float64).reshape(-1, 2)
        check_latlon(q, "query latlon")
        if len(self.rows) == 0:
            return np.full(len(q), -1, np.int64)
        dist, idx = self.tree.query(unit_vectors(q), k=1, distance_upper_bound=float(m_to_chord(tol_m)))
        found = np.isfinite(dist)
        out = np.full(len(q), -1, np.int64)
        out[found] = self.rows[idx[found]]
        return out


def topk_matches(topk_lat: Any, topk_lon: Any, locator: SampleLocator) -> list[tuple[int, int]]:
    """[(rank from 1, table row)] for the top-k candidates of one prediction that are training samples."""
    if topk_lat is None or topk_lon is None:
        return []
    rows = locator.find(np.column_stack([np.asarray(topk_lat, np.float64), np.asarray(topk_lon, np.float64)]))
    return [(rank + 1, int(r)) for rank, r in enumerate(rows) if r >= 0]
