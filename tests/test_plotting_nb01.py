"""Notebook 01's plot helpers: the similarity mosaic holds the cosine similarities where they belong, on one
colour scale; the patch labels are the sequence indices; bad arguments are refused."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from utils import plotting  # noqa: E402


def test_similarity_mosaic_places_each_map_against_torch_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(9, 5, generator=g)                 # a 3x3 grid of 5-d embeddings
    out = plotting.similarity_mosaic(emb, 3, gap=1, mask_self=False)
    assert out.shape == (11, 11)
    ref = torch.nn.functional.cosine_similarity(emb[:, None], emb[None], dim=-1).reshape(3, 3, 3, 3)
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(out[4 * i:4 * i + 3, 4 * j:4 * j + 3], ref[i, j].numpy(), atol=1e-6)
    assert np.isnan(out[3]).all() and np.isnan(out[:, 7]).all()  # the gaps
    masked = plotting.similarity_mosaic(emb, 3)
    assert np.isnan(masked[4 * 1 + 1, 4 * 1 + 1]) and not np.isnan(masked[4 * 2 + 0, 4 * 0 + 1])
    assert np.isnan(masked).sum() == np.isnan(out).sum() + 9  # one self pixel per map


def test_plot_similarity_mosaic_uses_the_given_scale_and_refuses_bad_arguments():
    ax = plotting.plot_similarity_mosaic(torch.randn(16, 4), 4, vmin=-0.5, vmax=1.0, title="t")
    assert ax.images[0].get_clim() == (-0.5, 1.0)
    with pytest.raises(ValueError, match="vmin"):
        plotting.plot_similarity_mosaic(torch.randn(16, 4), 4, vmin=1.0, vmax=1.0)
    with pytest.raises(ValueError, match="pos_embed"):
        plotting.similarity_mosaic(torch.randn(15, 4), 4)
    plt.close("all")


def test_label_patches_writes_the_reading_order():
    ax = plt.subplots()[1]
    plotting.label_patches(ax, 8, 12, 4)
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(6)]
    assert ax.texts[4].get_position() == (1 * 4 + 1.5, 1 * 4 + 1.5)  # row 1, column 1
    with pytest.raises(ValueError, match="patch_size"):
        plotting.label_patches(ax, 8, 10, 4)
    plt.close("all")
