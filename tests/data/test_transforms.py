import numpy as np
import torch

from cadx.data.transforms import Augmentation, Preprocessing, build_augmentation, prepare_image, to_model_input


def test_grey_is_replicated_for_three_channel_models() -> None:
    img = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (50, 1))
    out = prepare_image(img, Preprocessing(image_size=32, channels=3))
    assert out.shape == (3, 32, 32) and out.dtype == np.uint8
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
    assert out.min() <= 5 and out.max() >= 250  # per-image intensity stretch (input spans 0..198)


def test_colour_becomes_grey_for_one_channel_models() -> None:
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = 200
    out = prepare_image(img, Preprocessing(image_size=16, channels=1))
    assert out.shape == (1, 16, 16)


def test_normalisation_uses_stored_mean_and_std() -> None:
    pre = Preprocessing(image_size=4, channels=1, mean=0.5, std=0.25)
    x = to_model_input(torch.full((1, 1, 4, 4), 255, dtype=torch.uint8), pre)
    assert torch.allclose(x, torch.full_like(x, 2.0))
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_augmentation_is_random_but_keeps_shape() -> None:
    aug = build_augmentation(Augmentation(prob=1.0), 32)
    x = torch.rand(1, 32, 32)
    a, b = aug(x), aug(x)
    assert a.shape == x.shape
    assert not torch.allclose(torch.as_tensor(a), torch.as_tensor(b))
    assert build_augmentation(None, 32) is None


def test_augmentation_is_seeded() -> None:
    x = torch.rand(1, 32, 32)
    one, two, other = (build_augmentation(Augmentation(prob=1.0), 32, seed=s) for s in (3, 3, 4))
    a, b, c = (torch.as_tensor(aug(x)) for aug in (one, two, other))
    assert torch.equal(a, b) and not torch.allclose(a, c)
