"""Gene sets (pybridge._core._genesets): GMT reading, the embedded GO-BP sets, set selection."""

import gzip

import pytest

from pybridge._core import read_gmt, resolve_gene_sets, select_gene_sets


def test_read_gmt_plain_and_gz(tmp_path):
    text = "SET_A\tdesc\tG1\tG2\tG2\tG3\n\n# comment\nSET_B\thttp://x\tG3\tG4\n"
    (tmp_path / "s.gmt").write_text(text)
    with gzip.open(tmp_path / "s.gmt.gz", "wt") as fh:
        fh.write(text)
    for f in ("s.gmt", "s.gmt.gz"):
        assert read_gmt(tmp_path / f) == {"SET_A": ["G1", "G2", "G3"], "SET_B": ["G3", "G4"]}
    (tmp_path / "bad.gmt").write_text("ONLY_NAME\n")
    with pytest.raises(ValueError, match="GMT"):
        read_gmt(tmp_path / "bad.gmt")


def test_embedded_go_bp_and_selection():
    sets, source = resolve_gene_sets(None)
    assert len(sets) == 4957 and "GOBP_B_CELL_RECEPTOR_SIGNALING_PATHWAY" in sets
    assert "GO_BP_human" in source
    genes = [f"G{i}" for i in range(100)]
    toy = {"small": genes[:3], "a": genes[:20], "a_copy": genes[:19], "b": genes[50:80], "big": genes}
    kept, info = select_gene_sets(toy, genes, min_size=5, max_size=50, rank_by="coverage", max_overlap=0.8)
    assert list(kept) == ["b", "a"]  # small/big filtered by size, a_copy a near-duplicate of a
    assert info.loc["a_copy", "reason"].startswith("overlaps")
    assert info.loc["small", "n_genes"] == 3
    kept1, _ = select_gene_sets(toy, genes, min_size=5, max_size=50, rank_by="coverage", max_sets=1)
    assert list(kept1) == ["b"]
