import pytest
import torch

from simclrv2.data import ImageDataset


def numbered(n=6, channels=1, side=8):
    """Image i is filled with the value i, so any reordering is visible."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, side, side)
    return ImageDataset(
        images.contiguous(), torch.arange(n) % 3, ["a", "b", "c"], [f"{i}.png" for i in range(n)]
    )


def test_properties_and_items():
    data = numbered(channels=3, side=8)
    assert (len(data), data.channels, data.image_size, data.num_classes) == (6, 3, 8, 3)
    image, label = data[4]
    assert image.shape == (3, 8, 8)
    assert int(image[0, 0, 0]) == 4
    assert label == 1
    assert isinstance(label, int)


def test_unlabelled_by_default():
    data = ImageDataset(torch.zeros(3, 1, 4, 4, dtype=torch.uint8))
    assert data.labels.tolist() == [-1, -1, -1]
    assert data.names is None


def test_subset_keeps_images_labels_and_names_together():
    part = numbered().subset([5, 0, 3])
    assert part.images[:, 0, 0, 0].tolist() == [5, 0, 3]
    assert part.labels.tolist() == [2, 0, 0]
    assert part.names == ["5.png", "0.png", "3.png"]
    assert part.classes == ["a", "b", "c"]


def test_to_rgb_is_a_view():
    data = numbered()
    rgb = data.to_rgb()
    assert rgb.images.shape == (6, 3, 8, 8)
    assert rgb.images.data_ptr() == data.images.data_ptr()
    assert rgb.to_rgb() is rgb


def test_resized_keeps_flat_images_flat_and_changes_the_size():
    data = numbered(side=8)
    small = data.resized(5)
    assert small.images.shape == (6, 1, 5, 5)
    assert small.images.dtype == torch.uint8
    assert torch.equal(small.images, numbered(side=5).images)
    assert data.resized(8) is data


def test_resized_antialiases_a_checkerboard():
    board = ((torch.arange(16).view(-1, 1) + torch.arange(16)) % 2 * 200).to(torch.uint8)
    small = ImageDataset(board.view(1, 1, 16, 16)).resized(4)
    assert ((small.images.float() - 100).abs() <= 10).all()


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(2, 1, 4, 4),
        torch.zeros(2, 4, 4, dtype=torch.uint8),
        torch.zeros(2, 1, 4, 5, dtype=torch.uint8),
    ],
)
def test_rejects_non_uint8_square_batches(images):
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(images)
