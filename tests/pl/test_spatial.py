"""pybridge.pl.spatial_abundance on a real NNLS deconvolution of the lymph-node Visium spots."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

import pybridge as pb


@pytest.fixture(scope="module")
def deconvolved():
    vis = pb.datasets.lymphnode_visium()
    pb.tl.deconvolve(vis, pb.datasets.lymphnode_reference(), labels_key="cell_type", method="nnls", key_added="nnls")
    return vis


def test_one_panel_and_one_colour_scale_per_type(deconvolved):
    tab = deconvolved.obsm["nnls_mean"]
    types = ["B", "T_CD4"] if {"B", "T_CD4"} <= set(tab.columns) else list(tab.columns[:2])
    fig = pb.pl.spatial_abundance(deconvolved, types, key="nnls", quantity="mean")
    panels = [ax for ax in fig.axes if ax.get_title() in types]
    assert [ax.get_title() for ax in panels] == types
    # each panel's colour scale spans its own type's range (not one shared scale)
    for ax, t in zip(panels, types):
        coll = ax.collections[0]
        assert coll.norm.vmax == pytest.approx(float(tab[t].max()))
        np.testing.assert_allclose(coll.get_array(), tab[t].to_numpy())
    assert len(fig.axes) == 2 * len(types)  # a colorbar per panel


def test_errors_list_what_exists(deconvolved):
    with pytest.raises(KeyError, match="Results that exist: nnls_mean"):
        pb.pl.spatial_abundance(deconvolved, key="cell2location")
    with pytest.raises(KeyError, match="Types that exist"):
        pb.pl.spatial_abundance(deconvolved, ["Martian"], key="nnls", quantity="mean")
