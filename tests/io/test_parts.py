"""The typed parts that cross between R and Python (pybridge/io/_parts.py): round trips keep every
value and type."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from pybridge.io import df_from_parts, df_to_parts
from pybridge.io._parts import INT32_MAX, r_vector_view, sparse_from_parts, sparse_to_parts

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


@st.composite
def frames(draw):
    n = draw(st.integers(min_value=1, max_value=12))
    index = draw(st.lists(text, min_size=n, max_size=n, unique=True))
    cols = {}
    for j in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["cat", "ord", "bool", "nbool", "int", "nint", "float", "str", "nstr"]))
        name = f"{kind}_{j}" + draw(st.sampled_from(["", "_x", "é", " y"]))
        if kind in ("cat", "ord"):
            levels = draw(st.lists(text, min_size=1, max_size=5, unique=True))
            codes = draw(st.lists(st.integers(-1, len(levels) - 1), min_size=n, max_size=n))
            cols[name] = pd.Categorical.from_codes(codes, categories=levels, ordered=kind == "ord")
        elif kind == "bool":
            cols[name] = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        elif kind == "nbool":
            cols[name] = pd.array(draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n)),
                                  dtype="boolean")
        elif kind == "int":
            cols[name] = np.array(draw(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=n, max_size=n)),
                                  dtype=np.int32)
        elif kind == "nint":
            vals = draw(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), min_size=n, max_size=n))
            cols[name] = pd.array(vals, dtype="Int32")
        elif kind == "float":
            cols[name] = np.array(draw(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=True)),
                                                min_size=n, max_size=n)), dtype=float)
        elif kind == "str":
            cols[name] = np.array(draw(st.lists(text, min_size=n, max_size=n)), dtype=object)
        else:
            cols[name] = pd.array(draw(st.lists(st.one_of(st.none(), text), min_size=n, max_size=n)),
                                  dtype="string")
    return pd.DataFrame(cols, index=pd.Index(index, dtype=object))


def _assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == list(b.columns)
    assert list(a.index) == list(b.index)
    for c in a.columns:
        x, y = a[c], b[c]
        if isinstance(x.dtype, pd.CategoricalDtype):
            assert isinstance(y.dtype, pd.CategoricalDtype)
            assert list(x.cat.categories) == list(y.cat.categories)
            assert x.cat.ordered == y.cat.ordered
            np.testing.assert_array_equal(x.cat.codes.to_numpy(), y.cat.codes.to_numpy())
        else:
            np.testing.assert_array_equal(x.isna().to_numpy(), y.isna().to_numpy())
            keep = ~x.isna().to_numpy()
            np.testing.assert_array_equal(x[keep].astype(object).to_numpy(), y[keep].astype(object).to_numpy())


@settings(max_examples=150, deadline=None)
@given(frames())
def test_dataframe_parts_round_trip(df):
    p = df_to_parts(df)
    assert p["notes"] == []
    back = df_from_parts(p["index"], p["names"], p["columns"])
    _assert_frames_equal(df, back)
    for c in df.columns:  # NA keeps a nullable type, never a silent cast to float/object
        if isinstance(df[c].dtype, (pd.BooleanDtype, pd.Int32Dtype)) and df[c].isna().any():
            assert back[c].dtype == df[c].dtype


def test_unused_and_ordered_levels_survive():
    df = pd.DataFrame({"f": pd.Categorical(["b", "a", None], categories=["c", "b", "a"], ordered=True)},
                      index=["x", "y", "z"])
    p = df_to_parts(df)
    back = df_from_parts(p["index"], p["names"], p["columns"])
    assert list(back["f"].cat.categories) == ["c", "b", "a"] and back["f"].cat.ordered
    assert back["f"].isna().tolist() == [False, False, True]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(0, 30), st.floats(0, 1))
def test_sparse_parts_round_trip(n_cells, n_genes, density):
    m = sp.random(n_cells, n_genes, density=density, format="csr", random_state=0, dtype=np.float64)
    parts = sparse_to_parts(m)  # R orientation: genes x cells dgCMatrix
    assert list(parts["dim"]) == [n_genes, n_cells]
    back = sparse_from_parts(parts)  # cells x genes CSR, same arrays
    assert back.shape == m.shape
    assert (back != m).nnz == 0
    if m.nnz:
        assert np.shares_memory(back.data, parts["x"])  # no copy


def test_too_many_nonzeros_is_a_clear_error():
    class Big:  # quacks like a CSR matrix with 2^31 non-zeros, without allocating them
        format = "csr"
        nnz = INT32_MAX + 1
        shape = (10, 10)

    with pytest.raises(OverflowError, match="2\\^31-1"):
        sparse_to_parts(Big())


def test_r_vector_view_is_read_only_and_keeps_owner():
    owner = np.arange(5, dtype=np.float64)
    v = r_vector_view(str(owner.ctypes.data), 5, "double", keepalive=owner)
    np.testing.assert_array_equal(v, owner)
    assert not v.flags.writeable
    assert v.base._keepalive is owner
