"""The analytic MAC counts, on a shape small enough to count by hand."""
from models.arch import Shape
from models.macs import fast_macs, reference_macs, search_macs
from models.search import Search
from models.types import Component

# 2 layers, 2 query heads sharing 1 K/V head of size 2, d=4, d_mlp=8, vocab 10.
S = Shape("llama", n_layers=2, n_heads=2, n_kv_heads=1, head_dim=2, d_model=4, d_mlp=8, vocab_size=10,
          eps=1e-5, rope_theta=1e4, context=64)
ATTN = 2 * 2 * 2 * 4 + 2 * 1 * 2 * 4  # Q, O for 2 heads + K, V for 1: 48 per position
MLP = 3 * 4 * 8  # 96 per position
N, T = 3, 5


def test_reference_is_a_full_forward_with_logits_everywhere():
    assert reference_macs(S, N, T) == N * T * (2 * (ATTN + MLP) + 4 * 10)


def test_top_layer_candidate_costs_its_mlp_at_the_last_position_and_the_logits():
    # Nothing above layer 1, so only the last position is carried: its MLP on N rows, then the unembedding.
    assert fast_macs(S, N, T, frozenset({Component(1, 0)})) == N * MLP + N * 40
    assert fast_macs(S, N, T, frozenset({Component(1, 0), Component(1)})) == N * 40


def test_layers_above_cost_only_what_is_left():
    # Candidate in layer 0; layer 1 keeps head 1 (so its K/V head) and drops its MLP.
    removed = frozenset({Component(0, 0), Component(1, 0), Component(1)})
    one_head = 2 * 1 * 2 * 4 + 2 * 1 * 2 * 4  # 32 per position
    assert fast_macs(S, N, T, removed) == N * T * MLP + N * T * one_head + N * 40
    # With layer 1's attention gone too, positions never mix above layer 0: the last one only.
    assert fast_macs(S, N, T, removed | {Component(1, 1)}) == N * MLP + N * 40


def test_search_totals_count_every_scored_state():
    costs = {Component(1, 0): 0.0, Component(1, 1): 1.0, Component(1): 0.0,
             Component(0, 0): 0.0, Component(0, 1): 1.0, Component(0): 0.0}
    search = Search(lambda removed: sum(costs[c] for c in removed), costs, alpha=0.5)
    search.run()
    states = search.scored_states()
    assert len(states) == 7 and states[0] == frozenset() and states[2] == frozenset({Component(1, 0), Component(1, 1)})
    ref, fast = search_macs(S, N, T, states)
    assert ref == 8 * reference_macs(S, N, T)  # one forward for the reference logits, one per state
    assert ref / fast > 1
