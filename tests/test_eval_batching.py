"""Size-grouped batches of the evaluators (eval.runner): the sampler and the image size keys."""

from __future__ import annotations

import pytest
import torch
from vocgen import write_voc

from eval.datasets import VOCSegmentation
from eval.runner import SizeGroupedBatchSampler, image_size_keys, make_loader


def test_the_sampler_yields_full_batches_of_one_key_then_the_rest_and_every_index_once() -> None:
    keys = ["a", "b", "a", "c", "a", "b", "a", "a", "b", "b", "c", "a"]
    sampler = SizeGroupedBatchSampler(keys, 3)
    batches = list(sampler)
    assert batches == [[0, 2, 4], [1, 5, 8], [6, 7, 11], [3, 10], [9]]  # leftovers by first index
    assert len(sampler) == len(batches)
    assert sorted(i for b in batches for i in b) == list(range(len(keys)))
    assert all(len({keys[i] for i in b}) == 1 for b in batches)
    assert list(SizeGroupedBatchSampler(keys, 1)) == [[i] for i in range(len(keys))]
    with pytest.raises(ValueError):
        SizeGroupedBatchSampler(keys, 0)


def test_size_keys_come_from_the_file_headers_and_group_the_loader_batches(tmp_path) -> None:
    ids = [f"2000_{i:06d}" for i in range(5)]
    for i, image_id in enumerate(ids):
        write_voc(tmp_path, [image_id], size=(40, 48) if i % 2 else (52, 40), seed=i)
    (tmp_path / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    dataset = VOCSegmentation(tmp_path, "val2011")
    keys = image_size_keys(dataset)
    assert keys == [((52, 40), (52, 40)), ((40, 48), (40, 48))] * 2 + [((52, 40), (52, 40))]
    loader = make_loader(dataset, batch_size=2, workers=0, pin_memory=False, group_sizes=True)
    shapes = [(batch["id"], tuple(batch["inputs"]["color"].shape)) for batch in loader]
    assert shapes == [
        (ids[0:3:2], (2, 3, 40, 52)),
        (ids[1:4:2], (2, 3, 48, 40)),
        ([ids[4]], (1, 3, 40, 52)),
    ]


def test_samples_without_image_files_are_keyed_by_their_tensor_shapes() -> None:
    class Shapes(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.sides = [4, 5, 4]

        def __len__(self) -> int:
            return len(self.sides)

        def __getitem__(self, index: int) -> dict:
            side = self.sides[index]
            inputs = {"color": torch.zeros(3, side, side)}
            return {"inputs": inputs, "labels": {"semantic": torch.zeros(side, side)}}

    keys = image_size_keys(Shapes())
    assert keys[0] == keys[2] != keys[1]
    assert keys[1] == (("inputs", "color", (3, 5, 5)), ("labels", "semantic", (5, 5)))
