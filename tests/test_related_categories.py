"""``category_correlations`` and ``user_category_related`` (dbt) against the same quantities written
plainly with numpy from ``user_category_features``: the Pearson correlation across the clicking users
of two categories' 30-day click shares (0 where a user clicked nothing in one), the
``related_categories`` most correlated categories kept per category, and a user's taste for a
category as the share-weighted sum of its correlations with the user's other categories."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest

from tests.conftest import BUILT_DS, dbt_build, tandem_settings


def plain(home: Path, ds, k: int) -> tuple[dict, dict]:
    """(correlations {(a, b): r}, related {(user, b): taste}) for day ``ds``, written plainly."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        shares = con.sql(
            "select user_id, category_id, f_uc_click_share_30d as s from user_category_features "
            "where ds = ? and f_uc_click_share_30d > 0",
            params=[ds],
        ).pl()
    users, cats = sorted(set(shares["user_id"])), sorted(set(shares["category_id"]))
    row, col = {u: i for i, u in enumerate(users)}, {c: j for j, c in enumerate(cats)}
    S = np.zeros((len(users), len(cats)))  # [U, C]: users who clicked anything x their categories
    S[[row[u] for u in shares["user_id"]], [col[c] for c in shares["category_id"]]] = shares["s"]
    with np.errstate(invalid="ignore", divide="ignore"):
        R = np.corrcoef(S.T)  # [C, C]; nan for a category every clicker has at the same share
    correlations = {}
    for a in range(len(cats)):
        others = [b for b in range(len(cats)) if b != a and np.isfinite(R[a, b])]
        others.sort(key=lambda b: (-abs(R[a, b]), cats[b]))
        correlations |= {(cats[a], cats[b]): R[a, b] for b in others[:k]}
    related: dict = {}
    for (a, b), r in correlations.items():
        for u in np.flatnonzero(S[:, col[a]]):
            related[(users[u], b)] = related.get((users[u], b), 0.0) + S[u, col[a]] * r
    return correlations, related


def built(home: Path, ds) -> tuple[dict, dict]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        corr = con.sql(
            "select category_a, category_b, correlation from category_correlations where ds = ?", params=[ds]
        ).fetchall()
        rel = con.sql(
            "select user_id, category_id, f_uc_related_30d from user_category_related where ds = ?",
            params=[ds],
        ).fetchall()
    return {(a, b): r for a, b, r in corr}, {(u, c): v for u, c, v in rel}


def same(got: dict, want: dict, tol: float) -> None:
    assert set(got) == set(want), (sorted(set(got) ^ set(want))[:5], len(got), len(want))
    worst = max((abs(got[key] - want[key]) for key in want), default=0.0)
    assert worst < tol, worst


def test_the_built_tables_are_the_plain_computation(built_once: Path) -> None:
    k = tandem_settings(built_once).related_categories
    want_corr, want_rel = plain(built_once, BUILT_DS, k)
    got_corr, got_rel = built(built_once, BUILT_DS)
    assert len(want_corr) > 0 and len(want_rel) > 0
    same(got_corr, want_corr, 1e-9)
    same(got_rel, want_rel, 1e-9)  # shares and correlations in DECIMAL(13, 12): ~1e-12 each


@pytest.mark.parametrize("k", [2, 0])
def test_the_setting_keeps_that_many_related_categories(built_home: Path, k: int) -> None:
    """related_categories=2 keeps the 2 most correlated categories of each (so a user's taste reaches
    at most 2 categories from each they click); 0 keeps none (the feature
    is then 0 everywhere, and the exports carry the constant)."""
    settings = tandem_settings(built_home, related_categories=k)
    done = dbt_build(
        built_home,
        BUILT_DS,
        "--select",
        "category_correlations+",
        "--exclude",
        "resource_type:unit_test",
        settings=settings,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    got_corr, got_rel = built(built_home, BUILT_DS)
    want_corr, want_rel = plain(built_home, BUILT_DS, k)
    same(got_corr, want_corr, 1e-9)
    same(got_rel, want_rel, 1e-9)
    per_category = Counter(a for a, _ in got_corr)
    assert max(per_category.values()) == k if k else not got_corr
    with duckdb.connect(str(built_home / "warehouse.duckdb"), read_only=True) as con:
        taste = con.sql("select f_uc_related_30d from scoring_candidates").pl()["f_uc_related_30d"]
    assert taste.null_count() == 0 and ((taste == 0).all() if k == 0 else (taste != 0).any())
