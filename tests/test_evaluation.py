"""The evaluation protocols against plain references: weighted kNN written as a loop over
queries, and feature extraction as one forward per batch."""

import math

import pytest
import torch

from simclrv2.augment import center_crop
from simclrv2.data import ImageDataset
from simclrv2.evaluation import _shard_starts, extract, knn_scores
from simclrv2.runtime import Runtime

CPU = Runtime(torch.device("cpu"), None, channels_last=False)


def knn_reference(bank, bank_labels, queries, num_classes, k, temperature):
    """Per query: cosine similarity to every bank row, the k largest vote exp(sim / tau)."""
    scores = torch.zeros(len(queries), num_classes)
    for q, query in enumerate(queries):
        sims = [float(query @ row) / (float(query.norm()) * float(row.norm())) for row in bank]
        for i in sorted(range(len(bank)), key=lambda i: -sims[i])[:k]:
            scores[q, bank_labels[i]] += math.exp(sims[i] / temperature)
    return scores


@pytest.mark.parametrize(("k", "chunk"), [(1, 1024), (5, 3), (50, 7)])
def test_knn_scores_equal_a_loop_over_queries(k, chunk):
    gen = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(40, 6, generator=gen), torch.randn(11, 6, generator=gen)
    labels = torch.randint(0, 4, (40,), generator=gen)
    got = knn_scores(bank, labels, queries, 4, k, 0.5, chunk=chunk, device="cpu")
    torch.testing.assert_close(got, knn_reference(bank, labels, queries, 4, min(k, 40), 0.5))
    assert got.device.type == "cpu"


@pytest.mark.parametrize(
    ("n", "batch", "processes", "starts"),
    [
        (37, 8, 1, [0, 37]),
        (37, 8, 2, [0, 24, 37]),
        (5, 8, 2, [0, 5, 5]),
        (64, 8, 3, [0, 24, 48, 64]),
    ],
)
def test_shards_are_runs_of_whole_batches(n, batch, processes, starts):
    assert _shard_starts(n, batch, processes) == starts


def test_extract_in_one_process_is_one_forward_per_batch():
    images = torch.randint(0, 256, (21, 3, 10, 10), dtype=torch.uint8)
    data = ImageDataset(images, torch.arange(21) % 2)
    fn = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    features, labels = extract(fn, data, CPU, 8, batch_size=8)
    expected = torch.cat([fn(center_crop(part, 8)) for part in images.split(8)])
    assert torch.equal(features, expected.detach())
    assert torch.equal(labels, data.labels)
