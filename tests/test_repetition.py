"""repetition_share: the share of generated ids that continue an n-gram seen earlier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specfw.study.repetition import repetition_share

ids = st.lists(st.integers(min_value=0, max_value=50), max_size=40)


def test_nothing_generated_is_zero() -> None:
    assert repetition_share([1, 2, 3, 4], []) == 0.0
    assert repetition_share([], []) == 0.0


def test_copying_the_prompt_counts_once_the_n_gram_is_inside_it() -> None:
    # generated 1, 2, 3 end the n-grams [3,4,5,1], [4,5,1,2], [5,1,2,3]: new; 4 ends [1,2,3,4]: in the prompt;
    # 9 ends [2,3,4,9]: new
    assert repetition_share([1, 2, 3, 4, 5], [1, 2, 3, 4, 9]) == pytest.approx(1 / 5)


def test_the_preceding_ids_may_come_from_the_prompt() -> None:
    # [1,2,3,4] is in the prompt; the first generated id 4 ends [1,2,3,4] again
    assert repetition_share([1, 2, 3, 4, 0, 1, 2, 3], [4]) == 1.0


def test_a_loop_in_the_output_counts_from_its_second_turn() -> None:
    # positions 3, 4 end [7,8,7,8], [8,7,8,7]: first seen; positions 5, 6, 7 repeat them
    assert repetition_share([], [7, 8, 7, 8, 7, 8, 7, 8]) == pytest.approx(3 / 8)


def test_n_sets_the_run_length() -> None:
    prompt, generated = [1, 2, 3], [1, 2, 9]
    assert repetition_share(prompt, generated, n=1) == pytest.approx(2 / 3)  # 1 and 2 were seen
    assert repetition_share(prompt, generated, n=2) == pytest.approx(1 / 3)  # [1,2] was seen, [3,1], [2,9] not
    assert repetition_share(prompt, generated, n=4) == 0.0


def test_an_n_gram_must_end_before_the_id_it_is_compared_for() -> None:
    # one id repeated: with n = 2, [5,5] first ends at position 1, so position 1 is new and 2, 3 repeat
    assert repetition_share([5], [5, 5, 5], n=2) == pytest.approx(2 / 3)


def test_n_below_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        repetition_share([1], [1], n=0)


@given(ids, ids, st.integers(min_value=1, max_value=6))
def test_share_is_a_fraction(prompt: list[int], generated: list[int], n: int) -> None:
    share = repetition_share(prompt, generated, n)
    assert 0.0 <= share <= 1.0
    assert share * len(generated) == pytest.approx(round(share * len(generated)))


@given(ids.filter(lambda s: len(s) >= 4), st.integers(min_value=1, max_value=4))
def test_a_text_said_twice_repeats_in_its_second_half(text: list[int], n: int) -> None:
    # every id of the second copy from its n-th on ends the same n-gram as in the first copy
    assert repetition_share(text, text, n) >= (len(text) - n + 1) / len(text)
    assert round(repetition_share([], text + text, n) * 2 * len(text)) >= len(text) - n + 1


@given(st.lists(st.integers(min_value=0, max_value=10_000), unique=True, max_size=60), st.integers(0, 60),
       st.integers(min_value=1, max_value=6))
def test_fresh_ids_never_repeat(distinct: list[int], cut: int, n: int) -> None:
    assert repetition_share(distinct[:cut], distinct[cut:], n) == 0.0
