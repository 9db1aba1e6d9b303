"""Sparse contextual bigram benchmark: generator statistics, models, metrics, training, transfer, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hf_sparse_tempscale.scb import (
    EvalSet,
    LinearAttentionSCB,
    PreconditionedProximal,
    SCBInstance,
    SoftmaxAttentionSCB,
    TrainConfig,
    TrainCurve,
    make_instance,
    off_support_mass,
    perturb_transition,
    run_transfer,
    support_recall,
    total_variation,
    train,
    window_key_mask,
)
from hf_sparse_tempscale.scb.simplex import project_simplex

torch.set_num_threads(1)

# Total failure probability allowed for the statistical checks below (union bound over every compared entry).
DELTA = 1e-6


def hoeffding(n: torch.Tensor | int, comparisons: int, delta: float = DELTA, width: float = 1.0) -> torch.Tensor:
    """Two-sided Hoeffding radius for a mean of n i.i.d. variables in an interval of `width`, union-bounded over
    `comparisons` tests: P(any |mean - E| > eps) <= delta."""
    n = torch.as_tensor(n, dtype=torch.float64)
    return width * torch.sqrt(math.log(2 * comparisons / delta) / (2 * n))


# ---------------------------------------------------------------------------------------------- ground truth


def test_instance_ground_truth_is_well_formed_and_seeded():
    inst = make_instance(12, 10, 3, seed=5)
    assert inst.P.shape == (12, 12) and inst.q.shape == (12, 10) and inst.mu.shape == (12,)
    torch.testing.assert_close(inst.P.sum(1), torch.ones(12, dtype=torch.float64))
    torch.testing.assert_close(inst.q.sum(1), torch.ones(12, dtype=torch.float64))
    assert (inst.P >= 0).all() and (inst.q >= 0).all()
    assert ((inst.q > 0).sum(1) == 3).all()  # exact support size by default
    torch.testing.assert_close(inst.mu, torch.full((12,), 1 / 12, dtype=torch.float64))
    again = make_instance(12, 10, 3, seed=5)
    other = make_instance(12, 10, 3, seed=6)
    assert torch.equal(inst.P, again.P) and torch.equal(inst.q, again.q)
    assert not torch.equal(inst.q, other.q)


def test_variable_support_sizes_at_most_q():
    sizes = torch.cat([(make_instance(30, 20, 4, seed=s, exact_support=False).q > 0).sum(1) for s in range(3)])
    assert sizes.min() >= 1 and sizes.max() <= 4
    assert len(sizes.unique()) > 1  # sizes really vary


def test_windowed_supports_and_positions_stay_in_window():
    T, w = 20, 5
    inst = make_instance(10, T, 3, seed=0, window=w)
    assert not inst.q[:, : T - w].any()
    assert ((inst.q > 0).sum(1) == 3).all()
    sample = inst.sample(5000, seed=1)
    assert sample.position.min() >= T - w and sample.position.max() < T
    # Those positions are exactly the keys the library's band mask gives the query token at position T.
    key_mask = window_key_mask(T, w)
    assert key_mask.tolist() == [t >= T - w for t in range(T)]
    assert key_mask[inst.q.nonzero()[:, 1]].all()


def test_non_uniform_mu_is_a_distribution():
    inst = make_instance(8, 4, 2, seed=0, mu_concentration=0.5)
    torch.testing.assert_close(inst.mu.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert inst.mu.std() > 0


# ---------------------------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def big_sample():
    inst = make_instance(6, 8, 3, seed=3, mu_concentration=2.0)  # non-uniform mu exercises the mu check
    return inst, inst.sample(200_000, seed=7)


def test_token_frequencies_match_mu(big_sample):
    inst, s = big_sample
    N = inst.vocab_size
    counts = torch.bincount(s.tokens.reshape(-1), minlength=N).double()
    freq = counts / s.tokens.numel()  # all T+1 tokens are i.i.d. ~ mu
    eps = hoeffding(s.tokens.numel(), N)
    assert ((freq - inst.mu).abs() <= eps).all(), (freq - inst.mu).abs().max()


def test_positions_follow_q_of_the_last_token(big_sample):
    inst, s = big_sample
    N, T = inst.vocab_size, inst.seq_len
    query = s.tokens[:, -1]
    counts = torch.zeros(N, T, dtype=torch.float64).index_put_((query, s.position), torch.ones(len(s)).double(),
                                                              accumulate=True)
    assert not counts[~inst.supports].any()  # never outside supp(q^(k))
    n_k = counts.sum(1, keepdim=True)
    eps = hoeffding(n_k, N * T)
    assert ((counts / n_k - inst.q).abs() <= eps).all()


def test_transition_frequencies_match_P(big_sample):
    inst, s = big_sample
    N = inst.vocab_size
    source = s.tokens.gather(1, s.position[:, None]).squeeze(1)
    counts = torch.zeros(N, N, dtype=torch.float64).index_put_((source, s.target), torch.ones(len(s)).double(),
                                                              accumulate=True)
    n_i = counts.sum(1, keepdim=True)  # given n_i, the targets from source i are i.i.d. ~ P(. | i)
    eps = hoeffding(n_i, N * N)
    empirical = counts / n_i
    assert ((empirical - inst.P).abs() <= eps).all()
    # Power check: the same tolerance rejects a moderately different transition matrix.
    wrong = perturb_transition(inst, 0.3, seed=11).P
    assert ((empirical - wrong).abs() > eps).any()


def test_targets_match_next_token_distribution(big_sample):
    """E[1{y = j}] = E[p(x)_j] with p the true next-token distribution (no position needed)."""
    inst, s = big_sample
    N = inst.vocab_size
    p = inst.next_token_distribution(s.tokens)
    torch.testing.assert_close(p.sum(1), torch.ones(len(s), dtype=torch.float64))
    diff = (torch.nn.functional.one_hot(s.target, N).double() - p).mean(0)  # terms in [-1, 1]
    assert (diff.abs() <= hoeffding(len(s), N, width=2.0)).all()


def test_next_token_distribution_matches_brute_force():
    inst = make_instance(5, 6, 2, seed=2)
    tokens = inst.sample(20, seed=0).tokens
    expected = torch.zeros(20, 5, dtype=torch.float64)
    for n in range(20):
        k = tokens[n, -1]
        for t in range(6):
            expected[n] += inst.q[k, t] * inst.P[tokens[n, t]]
    torch.testing.assert_close(inst.next_token_distribution(tokens), expected)


def test_sampling_is_reproducible():
    inst = make_instance(5, 6, 2, seed=2)
    a, b, c = inst.sample(100, seed=1), inst.sample(100, seed=1), inst.sample(100, seed=2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.target, b.target)
    assert not torch.equal(a.tokens, c.tokens)


# ---------------------------------------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vocab_size=1, seq_len=4, max_support=2), "N .*>= 2"),
        (dict(vocab_size=5, seq_len=0, max_support=1), "T .*>= 1"),
        (dict(vocab_size=5, seq_len=4, max_support=0), "Q .*>= 1"),
        (dict(vocab_size=5, seq_len=4, max_support=5), "Q .*<= T"),
        (dict(vocab_size=5, seq_len=8, max_support=3, window=2), "Q .*<= window"),
        (dict(vocab_size=5, seq_len=8, max_support=3, window=9), "window must be <= T"),
        (dict(vocab_size=5, seq_len=8, max_support=3, window=0), "window must be >= 1"),
        (dict(vocab_size=5, seq_len=8, max_support=3, transition_concentration=0.0), "transition_concentration"),
        (dict(vocab_size=5.0, seq_len=8, max_support=3), "must be an int"),
    ],
)
def test_bad_generator_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_instance(**kwargs)


def _truth(N=3, T=4):
    P = torch.full((N, N), 1.0 / N)
    q = torch.zeros(N, T)
    q[:, -1] = 1.0
    return P, q, torch.full((N,), 1.0 / N)


def test_bad_ground_truth_is_rejected():
    P, q, mu = _truth()
    SCBInstance(P, q, mu, max_support=1, window=1)  # valid
    bad_rows = P.clone()
    bad_rows[1, 0] += 0.2
    with pytest.raises(ValueError, match="stochastic.*row 1"):
        SCBInstance(bad_rows, q, mu, max_support=1)
    negative = P.clone()
    negative[0] = torch.tensor([1.5, -0.5, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        SCBInstance(negative, q, mu, max_support=1)
    with pytest.raises(ValueError, match="shape"):
        SCBInstance(P[:, :2], q, mu, max_support=1)
    with pytest.raises(ValueError, match="finite"):
        SCBInstance(P.masked_fill(torch.eye(3, dtype=torch.bool), float("nan")), q, mu, max_support=1)
    with pytest.raises(ValueError, match="mu must be stochastic"):
        SCBInstance(P, q, mu * 2, max_support=1)
    wide = torch.full((3, 4), 0.25)
    with pytest.raises(ValueError, match="more than Q=1"):
        SCBInstance(P, wide, mu, max_support=1)
    early = torch.zeros(3, 4)
    early[:, 0] = 1.0
    with pytest.raises(ValueError, match="outside the last window"):
        SCBInstance(P, early, mu, max_support=1, window=2)
    with pytest.raises(ValueError, match="N .*>= 2"):
        SCBInstance(torch.ones(1, 1), torch.ones(1, 4) / 4, torch.ones(1), max_support=4)
    inst = SCBInstance(P, q, mu, max_support=1)
    with pytest.raises(ValueError, match="n .*>= 1"):
        inst.sample(0)
    with pytest.raises(ValueError, match="strength"):
        perturb_transition(inst, 1.5)


def test_bad_training_parameters():
    with pytest.raises(ValueError, match="method"):
        TrainConfig(method="sgd")
    with pytest.raises(ValueError, match="samples"):
        TrainConfig(samples=0)
    with pytest.raises(ValueError, match="l1"):
        TrainConfig(l1=-1.0)
    inst = make_instance(4, 5, 2, seed=0)
    with pytest.raises(ValueError, match="LinearAttentionSCB"):
        train(SoftmaxAttentionSCB.for_instance(inst), inst, TrainConfig(method="proximal", samples=64))
    with pytest.raises(ValueError, match="T=6"):
        train(LinearAttentionSCB(4, 6), inst, TrainConfig(samples=64))


# ---------------------------------------------------------------------------------------------- metrics / math


def test_project_simplex_satisfies_kkt():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(50, 9, generator=gen, dtype=torch.float64) * 2
    p = project_simplex(v)
    torch.testing.assert_close(p.sum(1), torch.ones(50, dtype=torch.float64))
    assert (p >= 0).all()
    # Projection <=> p = max(v - theta, 0): v - p equals theta on the support and v <= theta off it.
    theta = torch.where(p > 0, v - p, torch.nan).nanmean(1, keepdim=True)
    on = p > 0
    torch.testing.assert_close((v - p)[on], theta.expand_as(v)[on])
    assert (v[~on] <= theta.expand_as(v)[~on] + 1e-12).all()
    torch.testing.assert_close(project_simplex(p), p)  # idempotent on the simplex


def test_support_recall_cases():
    support = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    assert support_recall(support.float(), support) == 1.0
    assert support_recall((~support).float(), support) == 0.0
    # Flat attention: ties broken uniformly in expectation -> chance level |S|/T per row.
    assert support_recall(torch.ones(2, 5), support) == pytest.approx((2 / 5 + 1 / 5) / 2)
    partial = torch.tensor([[0.5, 0.1, 0.4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.2, 0.9]])
    assert support_recall(partial, support) == pytest.approx((1 / 2 + 1) / 2)
    assert support_recall(partial, support, weights=torch.tensor([3.0, 1.0])) == pytest.approx((3 * 0.5 + 1) / 4)
    assert off_support_mass(partial, support) == pytest.approx((0.4 / 1.0 + 0.2 / 1.1) / 2)


def test_total_variation():
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert total_variation(p, q) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        total_variation(p, q[:1])


def test_curve_samples_to_reach_requires_staying_there():
    curve = TrainCurve(samples=[0, 10, 20, 30], support_recall=[0.1, 0.95, 0.8, 0.96], tv=[0.3, 0.1, 0.2, 0.3])
    assert curve.samples_to_reach("support_recall", 0.9) == 30
    assert curve.samples_to_reach("tv", 0.15) is None


# ---------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("window", [None, 3])
def test_models_represent_the_ground_truth_exactly(window):
    inst = make_instance(6, 8, 2, seed=4, window=window)
    tokens = inst.sample(300, seed=0).tokens
    truth = inst.next_token_distribution(tokens).float()

    linear = LinearAttentionSCB.for_instance(inst, window=window)
    with torch.no_grad():
        linear.A.copy_(inst.q)
        linear.V.copy_(inst.P)
    torch.testing.assert_close(linear.predict_proba(tokens), truth, atol=1e-5, rtol=0)

    soft = SoftmaxAttentionSCB.for_instance(inst, window=window)
    with torch.no_grad():
        soft.A.copy_(inst.q.clamp_min(1e-30).log())  # exp(-69): off-support weight below float32 resolution
        soft.W.copy_(inst.P.clamp_min(1e-30).log())
    torch.testing.assert_close(soft.predict_proba(tokens), truth, atol=1e-5, rtol=0)
    assert support_recall(soft.attention(), inst.supports) == 1.0


def test_window_mask_blocks_keys_outside_the_band():
    model = SoftmaxAttentionSCB(5, 10, key_mask=window_key_mask(10, 4))
    with torch.no_grad():
        model.A.normal_()
    att = model.attention()
    assert (att[:, :6] == 0).all()
    torch.testing.assert_close(att.sum(1), torch.ones(5))
    tokens = torch.randint(0, 5, (4, 11))
    changed = tokens.clone()
    changed[:, :6] = (changed[:, :6] + 1) % 5  # tokens the query cannot see
    torch.testing.assert_close(model(tokens), model(changed))


def test_proximal_step_matches_hand_computation():
    model = LinearAttentionSCB(3, 2)
    with torch.no_grad():
        model.A.copy_(torch.tensor([[0.5, 0.5], [0.3, 0.003], [0.2, 0.2]]))
    model.A.grad = torch.tensor([[0.1, -0.2], [0.0, 0.0], [1.0, 1.0]])
    model.V.grad = torch.zeros(3, 3)
    model.V.grad[0] = torch.tensor([1.0, 0.0, 0.0])
    tokens = torch.tensor([[0, 0, 0], [1, 0, 1], [2, 1, 0], [0, 2, 0]])  # query tokens 0, 1, 0, 0 -> 2 never seen
    PreconditionedProximal(model, lr=0.1, value_lr=0.5, l1=0.05).step(tokens)
    # rows: lr * (B / c_k) * grad, then soft threshold lr * l1 = 0.005, clip at 0
    expected_a = torch.tensor([
        [0.5 - 0.1 * (4 / 3) * 0.1 - 0.005, 0.5 + 0.1 * (4 / 3) * 0.2 - 0.005],
        [0.3 - 0.005, 0.0],  # 0.003 - 0.005 clipped at zero
        [0.2, 0.2],  # unseen query token: untouched
    ])
    torch.testing.assert_close(model.A.detach(), expected_a)
    # V row 0: context-token frequency of 0 is 5/8 -> step 0.5 / (5/8) = 0.8 on its first entry, then projection.
    expected_v0 = project_simplex(torch.tensor([1 / 3 - 0.8, 1 / 3, 1 / 3]))
    torch.testing.assert_close(model.V[0].detach(), expected_v0)
    torch.testing.assert_close(model.V[1:].detach(), torch.full((2, 3), 1 / 3))


# ---------------------------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls, kwargs, window",
    [
        (SoftmaxAttentionSCB, dict(method="adam", lr=3e-2), None),
        (LinearAttentionSCB, dict(method="proximal", lr=0.1, value_lr=0.1, l1=0.01), None),
        (LinearAttentionSCB, dict(method="adam", lr=3e-3), None),
        (SoftmaxAttentionSCB, dict(method="adam", lr=3e-2), 4),
    ],
)
def test_small_instance_trains_to_high_support_recall(cls, kwargs, window):
    inst = make_instance(8, 16, 2, seed=0, window=window)
    model = cls.for_instance(inst, window=window)
    curve = train(model, inst, TrainConfig(samples=30_000, decay_samples=5_000, eval_points=8, seed=1, **kwargs),
                  EvalSet.draw(inst, 1024), progress=False)
    assert curve.support_recall[0] < 0.6  # starts near chance
    assert curve.support_recall[-1] >= 0.95
    assert curve.tv[-1] < 0.5 * curve.tv[0]


def test_transfer_starts_from_the_pretrained_attention():
    source = make_instance(6, 8, 2, seed=0)
    target = perturb_transition(source, 0.5, seed=1)
    assert torch.equal(source.q, target.q) and not torch.equal(source.P, target.P)
    pretrained = SoftmaxAttentionSCB.for_instance(source)
    with torch.no_grad():
        pretrained.A.copy_(source.q.clamp_min(1e-30).log())
        pretrained.W.normal_()
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    curves = run_transfer(pretrained, lambda: SoftmaxAttentionSCB.for_instance(target), target,
                          TrainConfig(samples=128, eval_points=2), progress=False)
    assert set(curves) == {"scratch", "finetune", "finetune_attention"}
    assert all(torch.equal(before[k], v) for k, v in pretrained.state_dict().items())  # not modified
    assert curves["finetune"].support_recall[0] == 1.0 and curves["finetune_attention"].support_recall[0] == 1.0
    assert curves["scratch"].support_recall[0] < 1.0
    # Attention-only transfer starts with uniform values: the same TV as a uniform prediction.
    ev = EvalSet.draw(target)
    uniform_tv = total_variation(torch.full_like(ev.true_distribution, 1 / 6), ev.true_distribution)
    assert curves["finetune_attention"].tv[0] == pytest.approx(uniform_tv, abs=1e-6)
    assert curves["finetune"].tv[0] != pytest.approx(uniform_tv, abs=1e-3)


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_writes_json_and_plot(tmp_path):
    from hf_sparse_tempscale.cli import main

    out, png = tmp_path / "scb.json", tmp_path / "scb.png"
    rc = main(["scb", "-N", "5", "-T", "6", "-Q", "2", "--window", "3", "--samples", "256", "--eval-points", "3",
               "--eval-size", "64", "--seeds", "0", "--out", str(out), "--plot", str(png), "--no-progress"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert len(result["runs"]) == 3 * 6  # 3 methods x (dense, windowed x2, transfer x3)
    assert {r["experiment"] for r in result["table"]} == {"dense", "windowed", "transfer"}
    run = result["runs"][0]
    assert run["curve"]["samples"][0] == 0 and run["curve"]["samples"][-1] >= 256
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [(["-T", "4", "-Q", "5"], "Q .*<= T"), (["--samples", "0"], "samples"),
                                           (["-N", "1"], "N .*>= 2")])
def test_cli_rejects_bad_parameters(tmp_path, argv, message):
    from hf_sparse_tempscale.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["scb", *argv, "--out", str(tmp_path / "x.json"), "--plot", "", "--no-progress"])
    assert not (tmp_path / "x.json").exists()
