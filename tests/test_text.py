"""Text as a feature (TANDEM_TEXT): the hashed n-grams of features.py, the shared encoder and the
query–title match of networks/text.py against their formulas, the exports' title and query point in
time, a night trained and scored with text on, and text off giving today's model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from mtl_model.config import Settings, SettingsError, load_settings
from mtl_model.hashing import hash_strings
from mtl_model.learn.features import (
    ENCODERS_FORMAT,
    TEXT_FIELDS,
    TEXT_SEED,
    Encoders,
    FeatureSpec,
    text_codes,
    text_ngrams,
)
from mtl_model.learn.networks import build_model
from mtl_model.learn.networks.text import TextEncoder, TitleQueryText
from mtl_model.learn.options import feature_spec, model_kwargs, options_fingerprint
from tests.conftest import START, dbt_build, tandem_settings
from tests.test_hashing import hash_by_hand


def test_hash_is_the_formula_and_the_same_in_another_process() -> None:
    """The n-grams' hash (mtl_model.hashing with TEXT_SEED): the formula, and the values it had when it
    lived in features.py, so a text model's buckets do not move."""
    words = ["<acme>", "acme phone", "手机", "a", "ab", "ba", "x" * 300]
    got = hash_strings(pl.Series(words), TEXT_SEED)
    assert [int(v) for v in got] == [hash_by_hand(w, TEXT_SEED) for w in words]
    assert int(got[0]) == 0x84A25529BD6B1C15 and int(got[2]) == 0x2E91D690093ADD2A  # main@8573a26
    assert int(hash_strings(pl.Series(["a"]), seed=1)[0]) != int(got[3])  # the seed enters
    # the same in another process: tests/test_hashing.py


def test_ngrams_are_words_then_word_pairs_then_padded_trigrams() -> None:
    grams = text_ngrams(pl.Series(["Acme  Phone-12", "Go"]))
    first = grams.filter(pl.col("text") == 0).sort("rank")["ngram"].to_list()
    assert first == [
        "<acme>", "<phone>", "<12>",  # words, lower-cased, split at anything but letters and digits
        "acme phone", "phone 12",  # adjacent pairs
        "<ac", "acm", "cme", "me>", "<ph", "pho", "hon", "one", "ne>", "<12", "12>",  # trigrams
    ]  # fmt: skip
    assert grams.filter(pl.col("text") == 1)["ngram"].to_list() == ["<go>", "<go", "go>"]


def test_text_codes_keep_the_first_ngrams_and_code_no_text_as_zero() -> None:
    texts = pl.Series(["Acme Phone 12", None, "", "acme phone-12", "Acme Phone 12"])
    codes = text_codes(texts, buckets=97, length=4)
    assert codes.shape == (5, 4)
    assert (codes[[1, 2]] == 0).all()  # null and empty: no n-gram
    assert (codes[0] == codes[3]).all() and (codes[0] == codes[4]).all()  # same normalised text
    expected = [1 + hash_by_hand(g, TEXT_SEED) % 97 for g in ["<acme>", "<phone>", "<12>", "acme phone"]]
    assert codes[0].tolist() == expected
    short = text_codes(pl.Series(["go"]), buckets=97, length=6)[0].tolist()
    assert short[3:] == [0, 0, 0] and min(short[:3]) >= 1  # 3 n-grams, then padding


def test_encoder_is_the_mean_of_ngram_embeddings_then_the_projection() -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(buckets=10, dim=3)
    codes = torch.tensor([[3, 7, 7, 0], [0, 0, 0, 0], [10, 1, 0, 0]])
    weight, proj = encoder.embedding.weight, encoder.projection.weight
    by_hand = []
    for row in codes.tolist():
        present = [c for c in row if c != 0]
        mean = torch.stack([weight[c] for c in present]).mean(0) if present else torch.zeros(3)
        by_hand.append(proj @ mean)
    torch.testing.assert_close(encoder(codes), torch.stack(by_hand))
    encoder.eval()
    with pytest.raises(IndexError):
        encoder(torch.tensor([[11, 0, 0, 0]]))


def test_title_vector_and_match_use_one_encoder_and_the_cosine() -> None:
    torch.manual_seed(0)
    text = TitleQueryText(buckets=20, length=3, dim=4)
    title = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    query = torch.tensor([[2, 9, 0], [0, 0, 0], [6, 0, 0]])
    out = text(torch.cat([title, query], dim=1))
    t, q = text.encoder(title), text.encoder(query)  # the same weights for both
    torch.testing.assert_close(out[:, :4], t)
    cosine = (t * q).sum(1) / (t.norm(dim=1) * q.norm(dim=1))
    torch.testing.assert_close(out[:, 4], torch.stack([cosine[0], torch.tensor(0.0), cosine[2]]))
    torch.testing.assert_close(out[2, 4], torch.tensor(1.0))  # the same text: cosine 1
    assert F.cosine_similarity(t[:1], q[:1]).item() == pytest.approx(out[0, 4].item(), abs=1e-6)


CARDS, TASKS, SCENE = [5, 6, 4], ("click", "cart", "purchase"), 2


@pytest.mark.parametrize("architecture", ["shared_bottom", "mmoe", "ple"])
def test_text_joins_the_backbone_input_and_off_is_todays_model(architecture: str) -> None:
    common = dict(embedding_dim=4, hidden_dims=(8, 8), tower_dim=4, scene_index=SCENE)
    torch.manual_seed(3)
    today = build_model(architecture, CARDS, 2, TASKS, **common)
    torch.manual_seed(3)
    off = build_model(architecture, CARDS, 2, TASKS, text=None, **common)
    assert today.state_dict().keys() == off.state_dict().keys()
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in today.state_dict().items())
    torch.manual_seed(3)
    on = build_model(architecture, CARDS, 2, TASKS, text={"buckets": 30, "length": 3}, **common)
    assert on.in_dim == today.in_dim + 4 + 1
    cat = torch.tensor([[1, 2, 1, 4, 5, 0, 4, 0, 0], [3, 4, 2, 7, 0, 0, 0, 0, 0]])
    num = torch.zeros(2, 2)
    today.eval()
    on.eval()
    torch.testing.assert_close(today(cat[:, :3], num)["click"], off(cat[:, :3], num)["click"])
    no_text = cat.clone()
    no_text[:, 3:] = 0
    assert not torch.allclose(on(cat, num)["click"], on(no_text, num)["click"])


def test_settings_off_by_default_and_out_of_the_fingerprint() -> None:
    settings = Settings()
    assert settings.text == "off"
    spec = feature_spec(settings)
    assert spec.text == () and spec == FeatureSpec(log_counts=True, max_vocab=0, hash_buckets=4096)
    assert "text" not in model_kwargs(settings, spec.categorical)
    assert not {"text", "text_buckets", "text_length"} & set(options_fingerprint(settings))
    on = settings.replace(text="hashed", text_buckets=1024, text_length=8)
    assert feature_spec(on).text == TEXT_FIELDS
    assert model_kwargs(on, spec.categorical)["text"] == {"buckets": 1024, "length": 8}
    assert options_fingerprint(on)["text_buckets"] == 1024


def test_a_pretrained_encoder_path_is_checked_and_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_TEXT_ENCODER_PATH", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="no such file or folder"):
        load_settings()
    monkeypatch.setenv("TANDEM_TEXT_ENCODER_PATH", str(tmp_path))
    with pytest.raises(SettingsError, match="not supported yet") as error:
        load_settings()
    assert "\n" not in str(error.value)


def test_encoders_code_text_after_the_sequence_and_read_back() -> None:
    df = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["i1", "i2", "i1"],
            "scene": ["search", "home", "home"],
            "title": ["Acme Phone 12", "Zed Shoe", None],
            "query": ["phone", None, None],
            "price": [1.0, 2.0, 3.0],
        }
    )
    spec = FeatureSpec(min_count=1, text=TEXT_FIELDS, text_buckets=64, text_length=5)
    enc = Encoders.fit(df, spec)
    cat, num = enc.encode(df)
    assert cat.shape == (3, 4 + 2 * 5) and enc.n_text == 10
    torch.testing.assert_close(cat[:, 4:9], torch.from_numpy(text_codes(df["title"], 64, 5)))
    assert cat[1:, 9:].eq(0).all() and cat[0, 9:].gt(0).any()  # the query: the search row only
    assert enc.encode_frame(df).width == cat.shape[1] + num.shape[1]
    back = Encoders.from_json(enc.to_json())
    assert back.spec == enc.spec and torch.equal(back.encode(df)[0], cat)
    assert enc.to_dict()["format"] == ENCODERS_FORMAT
    old = {**enc.to_dict(), "format": 4}
    old["spec"] = {k: v for k, v in old["spec"].items() if not k.startswith("text")}
    assert Encoders.from_dict(old).n_text == 0  # format 4: no text


def test_exports_carry_the_title_of_the_day_before_and_the_query(home: Path) -> None:
    """A title renamed on day d: exposures of day d still carry the old title (snapshot of d − 1),
    those of d + 1 the new one; the candidates of d carry d's; the query only on search rows."""
    ds = START + timedelta(days=3)
    folder = home / "landing" / "items" / f"ds={ds - timedelta(days=1)}"
    renamed = home / "landing" / "items" / f"ds={ds}"
    first = sorted(renamed.glob("*.parquet"))[0]
    items = pl.read_parquet(first)
    target = items["item_id"][0]
    old_title = pl.read_parquet(sorted(folder.glob("*.parquet"))[0]).filter(pl.col("item_id") == target)[
        "title"
    ][0]
    items.with_columns(
        pl.when(pl.col("item_id") == target).then(pl.lit("Renamed Thing 1")).otherwise("title").alias("title")
    ).write_parquet(first)
    settings = tandem_settings(home)
    built = dbt_build(home, ds + timedelta(days=1), settings=settings)
    assert built.returncode == 0, built.stdout[-3000:]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        samples = con.sql("select ds, item_id, scene, query, title from training_samples").pl()
        interactions = con.sql("select ds, item_id, scene, query from interactions").pl()
    mine = samples.filter(pl.col("item_id") == target)
    assert set(mine.filter(pl.col("ds") == ds)["title"].to_list()) == {old_title}
    assert set(mine.filter(pl.col("ds") == ds + timedelta(days=1))["title"].to_list()) == {"Renamed Thing 1"}
    assert samples.filter(pl.col("ds") == samples["ds"].min())["title"].null_count() > 0  # no day before
    assert (
        samples.filter(pl.col("scene") != "search")["query"].null_count()
        == samples.filter(pl.col("scene") != "search").height
    )
    key = ["ds", "item_id", "scene"]
    assert samples.filter(pl.col("scene") == "search")["query"].null_count() == 0
    assert (
        samples.select(*key, "query")
        .sort(key + ["query"])
        .equals(
            interactions.filter(pl.col("ds") >= samples["ds"].min())
            .select(*key, "query")
            .sort(key + ["query"])
        )
    )


def test_a_night_trains_and_scores_with_text_on(built_home: Path) -> None:
    from mtl_model.learn.registry import load_version
    from mtl_model.learn.train import train
    from mtl_model.outputs.warehouse import export_day
    from tests.conftest import BUILT_DS

    settings = tandem_settings(built_home, text="hashed", text_buckets=512, text_length=12, baselines=False)
    export_day(settings, BUILT_DS)
    result = train(settings, BUILT_DS)
    model, encoders, config = load_version(settings, result.version)
    assert config["model"]["text"] == {"buckets": 512, "length": 12}
    assert encoders.spec.text == TEXT_FIELDS and model.text is not None
    candidates = pl.read_parquet(settings.export_dir(BUILT_DS) / "candidates.parquet")
    assert candidates["title"].null_count() == 0
    cat, num = encoders.encode(candidates)
    assert cat[:, -24:-12].gt(0).any(dim=1).all() and cat[:, -12:].eq(0).all()  # titles; no query
    with torch.no_grad():
        p = torch.sigmoid(model(cat, num)["click"])
    assert torch.isfinite(p).all()
    default = train(tandem_settings(built_home, baselines=False), BUILT_DS)
    assert default.version != result.version
