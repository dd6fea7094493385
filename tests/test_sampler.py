"""What the sampler and generate() mean, checked as behaviour.

The sampler (csrc/graph/sampler.c) is tested against a float64 statement of its
contract: the distribution it must draw from for a given temperature, top_k,
top_p and repetition penalty. Frequencies over many draws from a fixed seed
are compared with that distribution (deterministic: the random stream is
splitmix64 from the seed), tokens outside the allowed set must never appear.
generate() is compared with an emulation through predict(): greedy decoding,
the context slide (keeps exactly the newest half) and the repetition penalty
over the prompt.
"""
import math

import numpy as np
import pytest

import bitnn
from bitnn import _core

DRAWS = 4000


def expected_distribution(scores, temperature, top_k=0, top_p=1.0, penalty=1.0, recent=()):
    """The probabilities the sampler must draw from (float64), as documented:

    the repetition penalty divides the positive scores of the recent tokens
    and multiplies the negative ones (once per distinct token); the softmax of
    scores / temperature; candidates are the top_k best (ties: smaller id),
    then the shortest prefix of them whose probability (over all tokens)
    reaches top_p; probabilities renormalised over the candidates."""
    w = np.asarray(scores, dtype=np.float32).copy()
    if penalty != 1.0:
        for t in sorted(set(int(r) for r in recent)):
            w[t] = np.float32(w[t] / np.float32(penalty)) if w[t] > 0 else \
                np.float32(w[t] * np.float32(penalty))
    V = len(w)
    order = sorted(range(V), key=lambda i: (-float(w[i]), i))
    p = np.exp((w.astype(np.float64) - float(w.max())) / temperature)
    p /= p.sum()
    k = top_k if 0 < top_k < V else V
    cand = order[:k]
    if top_p < 1.0:
        cum, n = 0.0, 0
        while n < k and cum < top_p:
            cum += p[cand[n]]
            n += 1
        cand = cand[:n]
    q = np.zeros(V)
    q[cand] = p[cand]
    return q / q.sum()


def draw(scores, n=DRAWS, seed=1, recent=(), **params):
    s = _core.Sampler(len(scores), seed=seed, **params)
    return np.array([s.sample(scores, recent) for _ in range(n)])


def check_frequencies(got, want, n=DRAWS):
    """No draw outside the support; each frequency within 5 sigma (+1 draw) of its probability."""
    counts = np.bincount(got, minlength=len(want))
    outside = [i for i in range(len(want)) if want[i] == 0 and counts[i]]
    assert not outside, f"drew tokens {outside} that have probability 0"
    freq = counts / n
    sigma = np.sqrt(want * (1 - want) / n)
    bad = np.flatnonzero(np.abs(freq - want) > 5 * sigma + 1.0 / n)
    assert not bad.size, [(int(i), float(freq[i]), float(want[i])) for i in bad]


# Scores whose probabilities fall off gently: every rank has a share that a
# few thousand draws see, so a filter that keeps one token too many is caught.
SCORES = np.array([0.3, 2.0, -1.0, 1.7, 0.9, 1.2, -0.4, 1.95, 0.0, 0.6], dtype=np.float32)


def test_expected_distribution_of_the_reference_itself():
    # the reference: top_k=3 keeps ids 1, 7, 3 (scores 2.0, 1.95, 1.7)
    q = expected_distribution(SCORES, 1.0, top_k=3)
    assert set(np.flatnonzero(q)) == {1, 7, 3}
    assert math.isclose(q.sum(), 1.0)


def test_temperature_zero_is_the_argmax():
    rng = np.random.default_rng(0)
    for seed in range(20):
        scores = rng.standard_normal(50).astype(np.float32)
        got = draw(scores, n=5, seed=seed, temperature=0.0, top_k=3, top_p=0.5)
        assert (got == int(np.argmax(scores))).all()


def test_temperature_zero_ties_go_to_the_smaller_id():
    scores = np.array([0.0, 3.0, 1.0, 3.0, 3.0], dtype=np.float32)
    assert (draw(scores, n=5, temperature=0.0) == 1).all()


def test_temperature_zero_applies_the_repetition_penalty():
    scores = np.array([1.0, 4.0, 3.0, -2.0], dtype=np.float32)  # 4 / 2 = 2 < 3: id 2 wins
    assert (draw(scores, n=3, temperature=0.0, repetition_penalty=2.0, recent=[1]) == 2).all()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_plain_sampling_follows_the_softmax(temperature):
    got = draw(SCORES, temperature=temperature, top_k=0, top_p=1.0)
    check_frequencies(got, expected_distribution(SCORES, temperature))


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_top_k_draws_only_the_k_best_with_renormalised_frequencies(k):
    got = draw(SCORES, temperature=1.0, top_k=k, top_p=1.0, seed=k)
    want = expected_distribution(SCORES, 1.0, top_k=k)
    assert np.count_nonzero(want) == k
    check_frequencies(got, want)
    assert len(set(got.tolist())) == k  # and every one of the k does appear


def test_top_k_of_the_vocabulary_size_or_more_is_no_filter():
    for k in (len(SCORES), len(SCORES) + 5):
        got = draw(SCORES, temperature=1.0, top_k=k, seed=3)
        check_frequencies(got, expected_distribution(SCORES, 1.0))


@pytest.mark.parametrize("top_p", [0.3, 0.55, 0.8, 0.95])
def test_top_p_draws_only_the_nucleus(top_p):
    want = expected_distribution(SCORES, 1.0, top_p=top_p)
    # the nucleus is the shortest prefix reaching top_p: without its last token it falls short
    p_all = expected_distribution(SCORES, 1.0)
    kept = np.flatnonzero(want)
    assert p_all[kept].sum() >= top_p and p_all[kept].sum() - p_all[kept].min() < top_p
    got = draw(SCORES, temperature=1.0, top_p=top_p, seed=7)
    check_frequencies(got, want)


def test_top_p_nucleus_wider_than_the_first_candidate_block():
    # 300 near-equal scores: the nucleus for 0.9 needs ~270 tokens, more than
    # the 64 the sampler looks at first
    scores = np.linspace(1.0, 0.0, 300).astype(np.float32)
    want = expected_distribution(scores, 0.1, top_p=0.9)
    assert np.count_nonzero(want) > 64
    got = draw(scores, temperature=0.1, top_p=0.9, seed=11, n=3000)
    assert want[got].min() > 0, "a token outside the nucleus was drawn"
    assert got.max() > 64  # tokens past the first block are drawn


def test_top_k_and_top_p_together():
    want = expected_distribution(SCORES, 0.7, top_k=4, top_p=0.6)
    got = draw(SCORES, temperature=0.7, top_k=4, top_p=0.6, seed=5)
    check_frequencies(got, want)


def test_repetition_penalty_makes_recent_tokens_rarer_as_documented():
    recent = [1, 7, 2, 7]  # 1 and 7 have positive scores, 2 a negative one
    plain = draw(SCORES, temperature=1.0, seed=2)
    got = draw(SCORES, temperature=1.0, repetition_penalty=1.8, recent=recent, seed=2)
    check_frequencies(got, expected_distribution(SCORES, 1.0, penalty=1.8, recent=recent))
    for t in (1, 7, 2):
        assert np.mean(got == t) < np.mean(plain == t), t


def test_repetition_penalty_below_one_favours_recent_tokens():
    got = draw(SCORES, temperature=1.0, repetition_penalty=0.5, recent=[4], seed=4)
    check_frequencies(got, expected_distribution(SCORES, 1.0, penalty=0.5, recent=[4]))


def test_repeated_ids_in_recent_are_penalised_once():
    a = draw(SCORES, n=300, temperature=1.0, repetition_penalty=1.5, recent=[3], seed=9)
    b = draw(SCORES, n=300, temperature=1.0, repetition_penalty=1.5, recent=[3, 3, 3, 3], seed=9)
    assert (a == b).all()


def test_same_seed_same_draws_other_seed_other_draws():
    a = draw(SCORES, n=200, temperature=1.0, seed=123)
    assert (a == draw(SCORES, n=200, temperature=1.0, seed=123)).all()
    assert (a != draw(SCORES, n=200, temperature=1.0, seed=124)).any()


# ------------------------------------------------------------- generate()

def greedy_emulation(model, prompt, n, ctx):
    """generate(temperature=0) rebuilt from predict(): the window is what the
    KV cache holds; when it is full the newest ctx // 2 tokens are kept."""
    window, history, out = list(prompt)[-ctx:], list(prompt)[-ctx:], []
    for _ in range(n):
        probs = model.predict([window])[0].astype(np.float64)
        top2 = np.sort(probs)[-2:]
        assert top2[1] > top2[0], "a tie in the emulation: pick another prompt"
        nxt = int(np.argmax(probs))
        out.append(nxt)
        history.append(nxt)
        window = history[-(ctx // 2):] if len(window) >= ctx else window + [nxt]
    return out


@pytest.mark.parametrize("ctx", [24, 9, 8, 5, 2])
def test_greedy_generation_with_slides_matches_predict(lm_path, ctx):
    _, path, _ = lm_path
    with bitnn.load(path) as model:
        prompt = [5, 17, 42, 3]
        got = model.generate(prompt, 30, temperature=0, ctx_size=ctx)
        assert got == greedy_emulation(model, prompt, 30, ctx)
        if ctx < 24:
            assert model.last_stats["context_shifts"] >= 1


def test_long_prompt_keeps_its_newest_tokens(lm_path):
    _, path, _ = lm_path
    with bitnn.load(path) as model:
        prompt = list(range(1, 31))  # 30 tokens into a context of 8
        got = model.generate(prompt, 6, temperature=0, ctx_size=8)
        assert got == greedy_emulation(model, prompt, 6, 8)


def test_top_k_1_and_tiny_top_p_are_greedy(lm_path):
    _, path, _ = lm_path
    with bitnn.load(path) as model:
        greedy = model.generate([7, 8, 9], 20, temperature=0)
        assert model.generate([7, 8, 9], 20, temperature=1.5, top_k=1, seed=3) == greedy
        assert model.generate([7, 8, 9], 20, temperature=1.5, top_k=0, top_p=1e-6,
                              seed=4) == greedy


def test_generate_draws_follow_predict_at_the_first_step(lm_path):
    """The first token of generate() over many seeds follows predict()'s
    distribution at the prompt, cut by top_k and renormalised."""
    _, path, _ = lm_path
    with bitnn.load(path) as model:
        prompt = [11, 12, 13]
        probs = model.predict([prompt])[0].astype(np.float64)
        # the sampler's scores are the logits; predict is their softmax, so
        # log-probabilities are the scores up to a constant
        want = expected_distribution(np.log(probs).astype(np.float32), 1.0, top_k=4)
        got = np.array([model.generate(prompt, 1, temperature=1.0, top_k=4, top_p=1.0,
                                       seed=s)[0] for s in range(1500)])
        check_frequencies(got, want, n=1500)


def test_repetition_penalty_makes_prompt_tokens_rarer(lm_path):
    _, path, _ = lm_path
    with bitnn.load(path) as model:
        prompt = [int(t) for t in np.argsort(-model.predict([[1, 2, 3]])[0])[:6]]

        def share(penalty):
            hits = total = 0
            for seed in range(12):
                out = model.generate(prompt, 16, temperature=1.0, top_k=0, top_p=1.0,
                                     repetition_penalty=penalty, seed=seed)
                hits += sum(t in prompt for t in out)
                total += len(out)
            return hits / total

        assert share(4.0) < 0.5 * share(1.0)
