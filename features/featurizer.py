"""`Featurizer`: an aggregation store plus the stateless transforms → every spec column.

The stores (`ReferenceFeatureStore`, `RedisFeatureStore`) compute the stateful aggregation
columns; transforms need no state, so they are computed here once for either store.
"""

from __future__ import annotations

import numpy as np

from features.spec import FeatureSpec
from features.store import FeatureBatch, FeatureResult, FeatureStore
from features.transforms import Transforms


class Featurizer:
    """A `FeatureStore` whose columns are `FeatureSpec.names`: aggregations, then transforms."""

    def __init__(self, spec: FeatureSpec, aggregations: FeatureStore) -> None:
        if aggregations.names != spec.aggregation_names:
            raise ValueError(
                f"store columns {aggregations.names} differ from the spec's aggregations "
                f"{spec.aggregation_names}; build the store from the same spec"
            )
        self.aggregations = aggregations
        self._transforms = Transforms(spec.transforms)
        self.names: tuple[str, ...] = spec.names

    def update_and_read(self, batch: FeatureBatch) -> FeatureResult:
        """Aggregations from the store (state updated), transforms from the records."""
        stored = self.aggregations.update_and_read(batch)
        if not self._transforms.names:
            return stored
        values = np.hstack([stored.values, self._transforms.apply(batch.records)])
        return FeatureResult(values=values, late=stored.late, replayed=stored.replayed)

    def close(self) -> None:
        """Close the underlying store."""
        self.aggregations.close()
