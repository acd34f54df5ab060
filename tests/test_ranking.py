"""The fused score and the per-category cap of the top K."""

import polars as pl

from mtl_model.outputs.score import fused_score, top_k


def scored() -> pl.DataFrame:
    # one user, 6 items: 4 of category a (the best scores), 2 of category b
    return pl.DataFrame(
        {
            "user_id": ["u"] * 6,
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
            "scene": ["home"] * 6,
            "category_id": ["a", "a", "a", "a", "b", "b"],
            "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        }
    )


def test_category_cap_lets_other_categories_in() -> None:
    capped = top_k(scored(), k=4, max_per_category=2)
    assert capped["item_id"].to_list() == ["i1", "i2", "i5", "i6"]
    assert capped["rank"].to_list() == [1, 2, 3, 4]
    assert top_k(scored(), k=4, max_per_category=0)["item_id"].to_list() == ["i1", "i2", "i3", "i4"]


def test_fused_score_with_price_is_expected_revenue() -> None:
    frame = pl.DataFrame({"p_click": [0.5, 0.1], "p_purchase": [0.1, 0.05], "price": [10.0, 400.0]})
    plain = frame.select(fused_score(("click", "purchase"), 1.0, 1.0))[:, 0].to_list()
    revenue = frame.select(fused_score(("click", "purchase"), 1.0, 1.0, 1.0))[:, 0].to_list()
    assert plain[0] > plain[1]  # the likelier purchase wins without price
    assert revenue == [0.5 * 0.1 * 10.0, 0.1 * 0.05 * 400.0] and revenue[1] > revenue[0]
