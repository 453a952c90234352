"""What the learner publishes to the examples log: each learned batch in learn order with
its sequence numbers and label identities; and labels adopted from the log on restart are
skipped, never learned twice."""

from __future__ import annotations

import numpy as np

from inference.adaptation import decode_examples, encode_examples
from tests.unit.streams.learner.test_label_processor import FakeLog, label, make_spec, processor


def test_learned_batches_are_published_in_learn_order() -> None:
    log = FakeLog()
    for i in range(6):
        log.add(str(i), float(i), 0.1 * i)
    p = processor(make_spec(), log)
    first = p.consume([label(i, y=float(i % 2)) for i in range(4)])
    second = p.consume([label(i, y=float(i % 2)) for i in (4, 5)])
    records = [r for res in (first, second) for b in res.examples for r in encode_examples(b)]
    decoded = decode_examples(records, len(p.learner.columns))
    assert decoded.seq.tolist() == list(range(6)) == [o for _p, o in decoded.labels]
    np.testing.assert_array_equal(decoded.matrix[:, 0], np.arange(6.0))  # the logged features
    np.testing.assert_allclose(decoded.matrix[:, 1], 0.1 * np.arange(6))  # the ONNX score
    assert decoded.y.tolist() == [float(i % 2) for i in range(6)]


def test_adopted_labels_are_skipped_and_advance_the_offsets() -> None:
    log = FakeLog()
    for i in range(5):
        log.add(str(i), float(i), 0.5)
    p = processor(make_spec(), log)
    p.adopted = {0: {0, 1, 2}}  # learned and published before a crash, adopted from the log
    result = p.consume([label(i) for i in range(5)])
    assert (result.skipped, result.learned) == (3, 2)
    assert [o for b in result.examples for _p, o in b.labels] == [3, 4]
    assert p.progress[0].next == 5 and not p.progress[0].pending
