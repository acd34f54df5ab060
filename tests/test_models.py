"""Model shapes, the architecture factory (shared-bottom, MMoE, PLE, ESMM, scene parts), and the metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_model.learn.metrics import auc, gauc, log_loss
from mtl_model.learn.networks import (
    PLE,
    FeatureEmbedding,
    MMoE,
    SharedBottom,
    build_model,
    predict_proba,
    product_logit,
    split_parameters,
)

CARDS = [10, 20, 5, 4]  # user, item, category, scene (scene codes: 0 null, 1 OOV, 2 home, 3 search)
SCENE = 3
TASKS = ("click", "cart", "purchase")
LAYOUT_1 = Path(__file__).parent / "fixtures" / "model_layout1.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def inputs(n: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], dim=1)
    return cat, torch.randn(n, 2, generator=g)


@pytest.mark.parametrize("architecture", ["shared_bottom", "mmoe", "ple"])
@pytest.mark.parametrize("esmm", [False, True])
@pytest.mark.parametrize("scene_towers", [False, True])
def test_forward_shapes_every_architecture(architecture: str, esmm: bool, scene_towers: bool) -> None:
    torch.manual_seed(0)
    model = build_model(
        architecture,
        CARDS,
        2,
        TASKS,
        embedding_dim=8,
        hidden_dims=(16, 8),
        esmm=esmm,
        scene_index=SCENE,
        scene_towers=scene_towers,
    )
    cat, num = inputs()
    out = model(cat, num)
    assert list(out) == list(TASKS) and model.tasks == TASKS
    assert all(v.shape == (7,) and torch.isfinite(v).all() for v in out.values())
    probs = predict_proba(model, cat, num, batch_size=3)
    assert all(p.shape == (7,) and p.dtype == torch.float64 for p in probs.values())
    assert all(((p > 0) & (p < 1)).all() for p in probs.values())
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.shared_parameters())
    assert all(p.grad is not None for p in model.shared_backbone_parameters())


@pytest.mark.parametrize("tasks", [("click",), ("click", "purchase"), ("click", "cart", "purchase")])
def test_shared_bottom_task_subsets(tasks: tuple[str, ...]) -> None:
    model = build_model("shared_bottom", CARDS, 2, tasks, embedding_dim=8, hidden_dims=(16, 8))
    assert isinstance(model, SharedBottom) and not model.esmm
    assert list(model(*inputs())) == list(tasks)


def _build(doc: dict, b: dict):
    return build_model(
        b["architecture"],
        doc["cardinalities"],
        len(doc["num"][0]),
        b["tasks"],
        b["embedding_dim"],
        b["hidden_dims"],
        b["tower_dim"],
        esmm=b["esmm"],
        scene_index=b["scene_index"],
        scene_towers=b["scene_towers"],
    )


def test_layout_1_models_still_load_with_the_same_outputs() -> None:
    """Versions saved in parameter layout 1 (one nn.Embedding per feature, a separate gate scene table,
    one nn.Sequential tower per task; the fixture was written by the models of commit d616d60) load
    through ``load_state_dict`` (as the registry does) and give the logits they gave then."""
    doc = json.loads(LAYOUT_1.read_text())
    cat, num = torch.tensor(doc["cat"]), torch.tensor(doc["num"])
    for name, saved in doc["models"].items():
        b = saved["build"]
        model = _build(doc, b)
        state = {k: torch.tensor(v).view(saved["shapes"][k]) for k, v in saved["state_dict"].items()}
        assert (
            "embeddings.0.weight" in state
            and "towers.click.0.weight" in state
            and "embedding.weight" not in state
        )
        model.load_state_dict(state)  # strict: every saved tensor is used, none is missing
        model.eval()
        with torch.no_grad():
            out = model(cat, num)
        for task in b["tasks"]:
            assert torch.allclose(out[task], torch.tensor(saved["logits"][task]), atol=1e-5), (name, task)
        again = _build(doc, b)
        again.load_state_dict(model.state_dict())  # the new layout round-trips
        assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_layout_1_tables_that_do_not_fit_are_a_clear_error() -> None:
    model = build_model("shared_bottom", [6, 6], 1, ("click",), embedding_dim=4, hidden_dims=(8,))
    assert sorted(model.state_dict()) == [
        "bottom.0.bias",
        "bottom.0.weight",
        "embedding.weight",
        "towers.b_out",
        "towers.hidden.biases.0",
        "towers.hidden.weights.0",
        "towers.w_out",
    ]
    state = {k: v for k, v in model.state_dict().items() if k != "embedding.weight"}
    state["embeddings.0.weight"] = torch.zeros(6, 4)
    state["embeddings.1.weight"] = torch.zeros(7, 4)  # another vocabulary than the model was built for
    with pytest.raises(RuntimeError, match="do not fit"):
        model.load_state_dict(state)


def test_feature_embedding_is_one_table_per_feature_stacked() -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding([3, 5, 4], 2, columns=[0, 1, 1])  # the last table reads column 1 again
    assert emb.weight.shape == (1 + 2 + 4 + 3, 2)
    codes = torch.tensor([[0, 1], [2, 3]])  # [B, C]
    out = emb(codes)  # [B, K, D]
    assert out.shape == (2, 3, 2)
    tables = [torch.cat([emb.weight[:1], emb.weight[emb.rows(k)]]) for k in range(3)]  # [size_k, D]
    for b in range(2):
        for k, column in enumerate([0, 1, 1]):
            assert torch.equal(out[b, k], tables[k][codes[b, column]])
    assert torch.equal(out[0, 0], torch.zeros(2))  # a null code
    for k in range(3):  # every table's OOV row starts at zero, its known rows do not
        assert torch.equal(emb.weight[emb.rows(k).start], torch.zeros(2))
        assert emb.weight[emb.rows(k).start + 1 : emb.rows(k).stop].abs().sum() > 0
    emb.eval()
    with pytest.raises(IndexError, match="out of range"):
        emb(torch.tensor([[0, 5]]))  # code 5 is beyond table 1 (size 5): codes of other encoders


@pytest.mark.parametrize("sparse", [False, True])
def test_null_embedding_is_zero_and_gets_no_gradient(sparse: bool) -> None:
    model = SharedBottom([6, 6], 1, ("click",), embedding_dim=4, hidden_dims=(8,), sparse=sparse)
    out = model(torch.tensor([[0, 3], [2, 0]]), torch.zeros(2, 1))
    out["click"].sum().backward()
    emb = model.embedding
    assert torch.equal(emb.weight[0], torch.zeros(4))  # the null row shared by every feature
    grad = emb.weight.grad.to_dense() if sparse else emb.weight.grad
    assert grad.is_sparse is False and torch.equal(grad[0], torch.zeros(4))
    assert emb.weight.grad.is_sparse == sparse
    touched = {emb.rows(0).start + 1, emb.rows(1).start + 2}  # user code 2, item code 3 (rows start at 1)
    assert {int(r) for r in grad.abs().sum(1).nonzero()} == touched


def test_dense_lookup_gives_nn_embeddings_values_and_gradient() -> None:
    """The CPU dense-gradient lookup (index_select / index_add_) against F.embedding(padding_idx=0)."""
    torch.manual_seed(4)
    emb = FeatureEmbedding([6, 9, 4], 3, columns=[0, 1, 2])
    codes = torch.randint(0, 4, (64, 3))  # repeated codes and nulls (0)
    reference = emb.weight.detach().clone().requires_grad_()
    rows = torch.where(codes > 0, codes + emb.offsets, 0)
    out, want = emb(codes), torch.nn.functional.embedding(rows, reference, padding_idx=0)
    assert torch.equal(out, want)
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g)
    assert torch.equal(emb.weight.grad, reference.grad) and torch.equal(emb.weight.grad[0], torch.zeros(3))


def test_split_parameters_puts_sparse_embeddings_apart() -> None:
    model = build_model(
        "mmoe", CARDS, 2, TASKS, embedding_dim=8, hidden_dims=(16,), scene_index=SCENE, sparse=True
    )
    sparse, dense = split_parameters(model)
    assert len(sparse) == 1  # one stacked table: the features' and the gates' scene embedding
    assert model.embedding.sizes == [*CARDS, CARDS[SCENE]]
    assert {id(p) for p in sparse}.isdisjoint(id(p) for p in dense)
    assert len(sparse) + len(dense) == len(list(model.parameters()))
    dense_model = build_model("mmoe", CARDS, 2, TASKS, embedding_dim=8, hidden_dims=(16,), sparse=False)
    assert split_parameters(dense_model)[0] == []


def test_mmoe_gates_are_distributions_over_experts_and_read_the_scene() -> None:
    torch.manual_seed(1)
    model = build_model(
        "mmoe", CARDS, 2, TASKS, embedding_dim=8, hidden_dims=(16, 8), n_experts=3, scene_index=SCENE
    )
    assert isinstance(model, MMoE) and model.experts.n == 3
    cat, num = inputs(50)
    _, gates = model.forward_with_gates(cat, num)
    assert set(gates) == set(TASKS)
    for g in gates.values():
        assert g.shape == (50, 3) and (g >= 0).all()
        assert torch.allclose(g.sum(-1), torch.ones(50), atol=1e-6)
    # gate input = concat(shared input, gate scene embedding): only the gate embedding of the scene differs
    home, search = cat.clone(), cat.clone()
    home[:, SCENE], search[:, SCENE] = 2, 3
    with torch.no_grad():
        model.embedding.weight[model.embedding.rows(SCENE)] = 0  # features no longer see the scene, gates do
    g_home = model.forward_with_gates(home, num)[1]["click"]
    g_search = model.forward_with_gates(search, num)[1]["click"]
    assert not torch.allclose(g_home, g_search)
    assert model.gates.in_features == model.in_dim + 8


def small_ple(levels: int, **options) -> PLE:
    """PLE with 2 experts per task and 3 shared ones a level, experts of 32 then 16, scene in the gates."""
    return build_model(
        "ple",
        CARDS,
        2,
        TASKS,
        embedding_dim=8,
        hidden_dims=(32, 16),
        ple_levels=levels,
        ple_task_experts=2,
        ple_shared_experts=3,
        scene_index=SCENE,
        **options,
    )


def test_ple_expert_counts_levels_and_gates() -> None:
    torch.manual_seed(2)
    model = small_ple(2)
    assert isinstance(model, PLE) and len(model.levels) == 2
    for k, level in enumerate(model.levels):
        assert level.task_experts.n == len(TASKS) * 2 and level.shared_experts.n == 3
        assert level.task_gate_w.shape[0] == len(TASKS) and level.task_gate_w.shape[2] == 2 + 3
        assert (level.shared_gate is None) == (k == 1)  # the last level has no shared gate
    assert model.levels[0].out_dim == 32 and model.levels[1].out_dim == 16  # hidden_dims split by level
    assert model.levels[0].shared_gate.out_features == len(TASKS) * 2 + 3
    cat, num = inputs(20)
    _, gates = model.forward_with_gates(cat, num)
    assert set(gates) == {f"level{k}/{t}" for k in (1, 2) for t in TASKS} | {"level1/shared"}
    assert gates["level1/shared"].shape == (20, 9) and gates["level2/cart"].shape == (20, 5)
    for g in gates.values():
        assert torch.allclose(g.sum(-1), torch.ones(20), atol=1e-6)
    one_level = build_model("ple", CARDS, 2, TASKS, hidden_dims=(32, 16), ple_levels=1)
    assert len(one_level.levels) == 1 and one_level.levels[0].out_dim == 16
    with pytest.raises(ValueError, match="PLE levels"):
        build_model("ple", CARDS, 2, TASKS, hidden_dims=(32,), ple_levels=2)


def _paper_inputs(model, cat: torch.Tensor, num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x [B, C·D + F] and the gates' own scene embedding [B, D] (None without one), read plainly."""
    vectors = model.embedding(cat)  # [B, C (+ 1), D]
    x = torch.cat([vectors[:, : model.n_features].flatten(1), num], 1)
    return x, (vectors[:, model.n_features] if model.has_gate_scene else None)


def _gate_input(inp: torch.Tensor, scene: torch.Tensor | None) -> torch.Tensor:
    return inp if scene is None else torch.cat([inp, scene], 1)


def _expert(bank, e: int, inp: torch.Tensor) -> torch.Tensor:
    """Expert ``e`` of a bank on its own, layer by layer: relu(inp @ W[e] + b[e])."""
    for w, b in zip(bank.weights, bank.biases, strict=True):
        inp = torch.relu(inp @ w[e] + b[e])
    return inp


def _tower(towers, t: int, rep: torch.Tensor) -> torch.Tensor:
    """Task ``t``'s tower on its own: relu(rep @ W1 + b1) @ w_out + b_out → [B]."""
    hidden = torch.relu(rep @ towers.hidden.weights[0][t] + towers.hidden.biases[0][t])
    return (hidden @ towers.w_out[t] + towers.b_out[t]).squeeze(-1)


def _ple_by_the_paper(model: PLE, cat: torch.Tensor, num: torch.Tensor) -> dict[str, torch.Tensor]:
    """PLE's forward written expert by expert and gate by gate, as in Tang et al. (2020), from the
    model's own parameters: what the batched implementation must equal."""
    x, scene = _paper_inputs(model, cat, num)
    task_in, shared_in = [x] * len(TASKS), x
    for level in model.levels:
        m_t = level.m_t
        own = [
            [_expert(level.task_experts, t * m_t + j, task_in[t]) for j in range(m_t)] for t in range(level.t)
        ]
        shared = [_expert(level.shared_experts, j, shared_in) for j in range(level.m_s)]
        outputs = []
        for t in range(level.t):
            g = torch.softmax(
                _gate_input(task_in[t], scene) @ level.task_gate_w[t] + level.task_gate_b[t], -1
            )
            outputs.append(sum(g[:, [e]] * h for e, h in enumerate(own[t] + shared)))
        if level.shared_gate is not None:
            g = torch.softmax(level.shared_gate(_gate_input(shared_in, scene)), -1)
            shared_in = sum(g[:, [e]] * h for e, h in enumerate([h for hs in own for h in hs] + shared))
        task_in = outputs
    return {task: _tower(model.towers, t, task_in[t]) for t, task in enumerate(TASKS)}


def _mmoe_by_the_paper(model: MMoE, cat: torch.Tensor, num: torch.Tensor) -> dict[str, torch.Tensor]:
    """MMoE's forward as in Ma et al. (2018), from the model's own parameters, expert by expert and
    task by task: f^k(x) = Σ_i g^k(x)_i f_i(x), g^k(x) = softmax(W_gk x), y_k = h^k(f^k(x))."""
    x, scene = _paper_inputs(model, cat, num)
    experts = [_expert(model.experts, i, x) for i in range(model.n_experts)]  # f_i(x) [B, H]
    n = model.n_experts
    out = {}
    for k, task in enumerate(model.tasks):
        w_gk, b_gk = model.gates.weight[k * n : (k + 1) * n], model.gates.bias[k * n : (k + 1) * n]
        g_k = torch.softmax(_gate_input(x, scene) @ w_gk.t() + b_gk, -1)  # g^k(x) [B, n]
        f_k = sum(g_k[:, [i]] * f_i for i, f_i in enumerate(experts))  # f^k(x) [B, H]
        out[task] = _tower(model.towers, k, f_k)  # y_k = h^k(f^k(x))
    return out


@pytest.mark.parametrize("hidden_dims", [(16,), (16, 8)])
@pytest.mark.parametrize("scene_index", [SCENE, None])
def test_mmoe_equals_the_paper_written_expert_by_expert(hidden_dims: tuple[int, ...], scene_index) -> None:
    """One-layer experts run as one GEMM, deeper ones as batched matmuls; the gates read the scene
    embedding when there is a scene feature."""
    torch.manual_seed(4)
    model = build_model(
        "mmoe",
        CARDS,
        2,
        TASKS,
        embedding_dim=8,
        hidden_dims=hidden_dims,
        n_experts=3,
        esmm=False,
        scene_index=scene_index,
    )
    assert isinstance(model, MMoE) and model.has_gate_scene == (scene_index is not None)
    cat, num = inputs(64)
    got, want = model(cat, num), _mmoe_by_the_paper(model, cat, num)
    for task in TASKS:
        assert torch.allclose(got[task], want[task], rtol=1e-6, atol=1e-6), task


@pytest.mark.parametrize("levels", [1, 2])
def test_ple_equals_the_paper_written_expert_by_expert(levels: int) -> None:
    """One level: a two-layer expert bank on the shared input; two levels: one-layer banks (the first
    on the shared input as one GEMM, the second on per-task inputs)."""
    torch.manual_seed(3)
    model = small_ple(levels, esmm=False)
    cat, num = inputs(64)
    got, want = model(cat, num), _ple_by_the_paper(model, cat, num)
    for task in TASKS:
        assert torch.allclose(got[task], want[task], atol=1e-5), task


@pytest.mark.parametrize("architecture", ["shared_bottom", "mmoe", "ple"])
def test_esmm_ctcvr_is_the_product_and_never_above_ctr(architecture: str) -> None:
    torch.manual_seed(3)
    model = build_model(architecture, CARDS, 2, TASKS, embedding_dim=8, hidden_dims=(16, 8), esmm=True)
    assert model.esmm and model.esmm_tasks == ("cart", "purchase")
    with torch.no_grad():  # push the towers to extremes so the product is tested near 0 and 1
        model.towers.b_out.add_(torch.randn(model.towers.b_out.shape) * 6)
    cat, num = inputs(200, seed=4)
    probs = predict_proba(model, cat, num)
    for task in ("cart", "purchase"):
        assert (probs[task] <= probs["click"] + 1e-6).all()
    a = torch.tensor([-30.0, -3.0, 0.0, 2.0, 15.0, 40.0])
    b = torch.tensor([-2.0, 40.0, 0.0, -1.0, 15.0, 40.0])
    z = product_logit(a, b)
    assert torch.isfinite(z).all()
    expected = torch.sigmoid(a.double()) * torch.sigmoid(b.double())
    assert torch.allclose(torch.sigmoid(z.double()), expected.clamp(max=1 - 1e-6), rtol=1e-4, atol=1e-7)


def test_esmm_needs_click_and_is_on_by_default_for_gated_models() -> None:
    with pytest.raises(ValueError, match="ESMM needs the 'click' task"):
        build_model("mmoe", CARDS, 2, ("cart", "purchase"), esmm=True)
    assert build_model("mmoe", CARDS, 2, TASKS).esmm
    assert build_model("ple", CARDS, 2, TASKS).esmm
    assert not build_model("shared_bottom", CARDS, 2, TASKS).esmm
    assert not build_model("mmoe", CARDS, 2, ("click",)).esmm
    assert not build_model("mmoe", CARDS, 2, ("cart", "purchase")).esmm


def test_scene_towers_start_neutral_and_separate_scenes() -> None:
    torch.manual_seed(5)
    model = build_model("mmoe", CARDS, 2, TASKS, hidden_dims=(16,), scene_index=SCENE, scene_towers=True)
    cat, num = inputs(30)
    rep = torch.randn(30, 16)
    tower = model.scene_towers["click"]
    assert torch.equal(tower(rep, cat[:, SCENE]), torch.zeros(30))  # residual is zero at start
    with torch.no_grad():
        tower.w2[3].fill_(1.0)  # only the "search" tower moves
    moved = tower(rep, cat[:, SCENE]) != 0
    assert moved.any() and torch.equal(moved, (cat[:, SCENE] == 3) & moved)
    with pytest.raises(ValueError, match="scene_towers needs a scene feature"):
        build_model("mmoe", CARDS, 2, TASKS, scene_towers=True)


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'transformer'"):
        build_model("transformer", [3], 1, ("click",))


def test_auc_hand_computed() -> None:
    # positives 0.8 and 0.4; negatives 0.6, 0.2, 0.1: pairs won 3 + 2 of 6
    assert auc([1, 0, 1, 0, 0], [0.8, 0.6, 0.4, 0.2, 0.1]) == pytest.approx(5 / 6)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0


def test_auc_ties_count_half() -> None:
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # positive 0.5 ties one negative (half) and beats 0.1 (one): 1.5 / 2
    assert auc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)
    # matches the pairwise definition on random data with many ties
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 5, 300).astype(float)
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc(y, s) == pytest.approx(brute)


def test_auc_one_class_is_nan() -> None:
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(auc([], []))


def test_gauc_hand_computed() -> None:
    # user a (4 rows): AUC 3/4; user b (2 rows): AUC 0; user c: one class only -> left out
    labels = [1, 0, 1, 0, 1, 0, 1, 1]
    scores = [0.9, 0.8, 0.6, 0.5, 0.1, 0.7, 0.4, 0.2]
    users = ["a", "a", "a", "a", "b", "b", "c", "c"]
    assert gauc(labels, scores, users) == pytest.approx((4 * 0.75 + 2 * 0.0) / 6)
    assert math.isnan(gauc([1, 1, 0], [0.1, 0.2, 0.3], ["a", "a", "b"]))


def test_gauc_matches_per_user_auc_with_ties() -> None:
    rng = np.random.default_rng(1)
    users = rng.integers(0, 40, 3000)
    y = rng.random(3000) < 0.3
    s = rng.integers(0, 6, 3000) + 0.8 * y  # many ties
    total = weight = 0.0
    for u in np.unique(users):
        m = users == u
        a = auc(y[m], s[m])
        if math.isfinite(a):
            total, weight = total + a * m.sum(), weight + m.sum()
    assert gauc(y, s, users) == pytest.approx(total / weight)
    assert gauc(y, s, users.astype(str)) == pytest.approx(total / weight)


def test_log_loss() -> None:
    assert log_loss([1, 0], [0.8, 0.2]) == pytest.approx(-math.log(0.8))
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-7))


@pytest.mark.parametrize("architecture", ["shared_bottom", "mmoe", "ple"])
def test_pal_position_gates_logged_rows_only_and_never_enters_relevance(architecture: str) -> None:
    """PAL (position last, bias_index): a row with a position gets logit(p_seen · p_relevance); a
    row without one (a scoring candidate) gets the relevance alone, whatever ProbSeen's weights; and
    the position's embedding is not an input of the backbone."""
    torch.manual_seed(0)
    cards = [*CARDS, 6]  # + position codes (0 null, 1 OOV, 2.. positions)
    model = build_model(
        architecture,
        cards,
        2,
        TASKS,
        embedding_dim=4,
        hidden_dims=(8,),
        tower_dim=4,
        scene_index=SCENE,
        bias_index=len(CARDS),
    )
    assert model.in_dim == 4 * len(CARDS) + 2  # C-1 embeddings: no position
    cat, num = inputs(16)
    logged = torch.cat([cat, torch.randint(2, 6, (16, 1))], dim=1)
    unseen = torch.cat([cat, torch.zeros(16, 1, dtype=torch.long)], dim=1)
    model.eval()
    with torch.no_grad():
        relevance, with_bias = model(unseen, num), model(logged, num)
        seen = model.prob_seen(model.embedding(logged)[:, len(CARDS)], model.embedding(logged)[:, SCENE])
        for p in model.prob_seen.parameters():
            p.add_(1.0)  # another ProbSeen: candidates' scores must not move
        assert all(torch.equal(model(unseen, num)[t], relevance[t]) for t in TASKS)
    biased = ("click",) if model.esmm else TASKS
    for t in biased:
        torch.testing.assert_close(with_bias[t], product_logit(seen, relevance[t]), rtol=1e-5, atol=1e-5)
    for t in set(TASKS) - set(biased):  # under ESMM the post-click tasks carry it through pCTR
        ctr = torch.sigmoid(with_bias["click"]) / torch.sigmoid(relevance["click"])
        torch.testing.assert_close(torch.sigmoid(with_bias[t]), torch.sigmoid(relevance[t]) * ctr)


def test_pal_needs_the_position_last() -> None:
    with pytest.raises(ValueError, match="last categorical column"):
        build_model("shared_bottom", [*CARDS, 6], 2, TASKS, scene_index=SCENE, bias_index=0)


HISTORY = {"length": 3, "fields": [{"table": 1}, {"table": 2}, {"size": 5}], "target": [1, 2]}


def _history_inputs(n: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes [n, C + 3·L]: the main columns, then L items, L categories, L event types (0 = no step)."""
    cat, num = inputs(n, seed=3)
    g = torch.Generator().manual_seed(4)
    steps = torch.randint(1, 3, (n, 1), generator=g)  # 1 or 2 steps present
    present = torch.arange(3).unsqueeze(0) < steps
    fields = [torch.randint(2, size, (n, 3), generator=g) * present for size in (CARDS[1], CARDS[2], 5)]
    return torch.cat([cat, *fields], dim=1), num


def _din_by_the_paper(model, cat: torch.Tensor) -> torch.Tensor:
    """Zhou et al.: e_j = Σ_fields embedding, a_j = MLP([e_j, v, e_j − v, e_j·v]), interest Σ_j a_j e_j,
    written step by step from the stacked table's rows."""
    emb, weight = model.embedding, model.embedding.weight

    def row(code: int, table: int) -> torch.Tensor:
        return weight[code + int(emb.offsets[table])] if code > 0 else torch.zeros(weight.shape[1])

    own = len(emb.sizes) - 1  # the event types' own table is the last one
    out = []
    for b in range(cat.shape[0]):
        v = row(int(cat[b, 1]), 1) + row(int(cat[b, 2]), 2)
        interest = torch.zeros(weight.shape[1])
        for j in range(3):
            item, category, kind = (int(cat[b, len(CARDS) + f * 3 + j]) for f in range(3))
            if item == 0:
                continue
            e = row(item, 1) + row(category, 2) + row(kind, own)
            a = model.attention.activation_unit(torch.cat([e, v, e - v, e * v]))
            interest = interest + a * e
        out.append(interest)
    return torch.stack(out)


@pytest.mark.parametrize("architecture", ["shared_bottom", "mmoe"])
def test_din_interest_equals_the_paper_written_step_by_step(architecture: str) -> None:
    torch.manual_seed(1)
    model = build_model(
        architecture,
        CARDS,
        2,
        TASKS,
        embedding_dim=4,
        hidden_dims=(8,),
        tower_dim=4,
        scene_index=SCENE,
        history=HISTORY,
    )
    cat, num = _history_inputs()
    with torch.no_grad():
        vectors = model.embedding(cat)
        n_steps = 3 * 3
        main, steps = vectors.split([vectors.shape[1] - n_steps, n_steps], dim=1)
        got = model._interest(cat, main, steps)
        torch.testing.assert_close(got, _din_by_the_paper(model, cat), rtol=1e-5, atol=1e-6)
        assert model.in_dim == 4 * len(CARDS) + 2 + 4
        # the sequence changes the prediction; a user without one gets a zero interest
        no_history = cat.clone()
        no_history[:, len(CARDS) :] = 0
        assert not torch.allclose(model(cat, num)["click"], model(no_history, num)["click"])
        empty = model._interest(
            no_history, *model.embedding(no_history).split([main.shape[1], n_steps], dim=1)
        )
        assert torch.equal(empty, torch.zeros_like(empty))
