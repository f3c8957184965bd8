"""Collators pickle, for DataLoader workers started by spawn."""

from __future__ import annotations

import numpy as np

import tokenmill


def test_collators_pickle_for_spawned_workers(tokenizer: tokenmill.Tokenizer) -> None:
    import pickle

    from torch.utils.data import DataLoader

    rows = [list(range(200 + i, 290 + i)) for i in range(32)]
    for kind in (tokenmill.MLMCollator, tokenmill.SpanCorruptionCollator, tokenmill.UL2Collator):
        collator = kind(tokenizer, seed=4, epoch=2, return_tensors="np")
        clone = pickle.loads(pickle.dumps(collator))
        for name, value in collator(rows).items():
            assert np.array_equal(clone(rows)[name], value), name
    collator = tokenmill.MLMCollator(tokenizer, seed=4)
    loader = DataLoader(
        rows, batch_size=8, collate_fn=collator, num_workers=2, multiprocessing_context="spawn"
    )  # type: ignore[arg-type]
    spawned = [b["labels"] for b in loader]
    serial = [collator(rows[i : i + 8])["labels"] for i in range(0, 32, 8)]
    assert all((a == b).all() for a, b in zip(spawned, serial, strict=True))
