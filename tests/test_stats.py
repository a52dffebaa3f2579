"""Bootstrap intervals and three-way verdicts on data small enough to work out by hand."""

import math

import numpy as np
import pytest

from monosem.analysis.stats import (
    FAILS,
    HOLDS,
    NOT_RUN,
    UNSURE,
    bootstrap_ci,
    combine,
    slope,
    spearman,
    spread_of_means,
    verdict,
    within,
)


def test_bootstrap_interval_of_a_mean_on_two_values():
    # resampled means of [0, 1] are 0, 1/2, 1 with chances 1/4, 1/2, 1/4: the 95% interval is [0, 1], the
    # central 40% (quantiles 0.3 and 0.7, both inside the middle half) is 1/2 alone
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], level=0.4) == (0.5, 0.5)
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))


def test_bootstrap_is_the_same_on_every_call_and_moves_with_its_seed():
    xs = [0.1, 0.5, 0.2, 0.9, 0.4]
    assert bootstrap_ci(xs) == bootstrap_ci(list(xs))
    assert bootstrap_ci(xs, seed=1) != bootstrap_ci(xs)


def test_paired_lists_are_resampled_row_by_row_and_unpaired_ones_each_on_its_own():
    # every paired resample of (x, 2x) with two distinct x has slope 2; the constant ones (x all equal) are dropped
    assert bootstrap_ci([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]], slope) == pytest.approx((2.0, 2.0))
    # unpaired: 5 − mean of a resample of [0, 1] is 5, 4.5 or 4
    gap = bootstrap_ci([[0.0, 1.0], [5.0, 5.0, 5.0]], lambda a, b: b.mean() - a.mean(), paired=False)
    assert gap == (4.0, 5.0)
    assert all(math.isnan(v) for v in bootstrap_ci([[0.0, 1.0], [5.0]], lambda a, b: 0.0, paired=False))


def test_mostly_undefined_statistics_give_no_interval():
    assert all(math.isnan(v) for v in bootstrap_ci([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], slope))


@pytest.mark.parametrize("ci, above, expected", [
    ((0.1, 0.2), True, HOLDS), ((-0.2, -0.1), True, FAILS), ((-0.1, 0.1), True, UNSURE),
    ((-0.2, -0.1), False, HOLDS), ((0.1, 0.2), False, FAILS), ((-0.1, 0.1), False, UNSURE),
    ((math.nan, math.nan), True, UNSURE)])
def test_verdict_against_zero(ci, above, expected):
    assert verdict(ci, 0.0, above) == expected


@pytest.mark.parametrize("ci, expected", [((0.3, 0.6), HOLDS), ((0.8, 0.9), FAILS), ((0.1, 0.2), FAILS),
                                          ((0.2, 0.5), UNSURE), ((0.1, 0.9), UNSURE)])
def test_within_a_range(ci, expected):
    assert within(ci, 0.25, 0.75) == expected


def test_combine_needs_every_judged_part_to_hold():
    assert combine([HOLDS, NOT_RUN]) == HOLDS
    assert combine([HOLDS, UNSURE]) == UNSURE
    assert combine([UNSURE, FAILS, HOLDS]) == FAILS
    assert combine([NOT_RUN]) == NOT_RUN


def test_a_vectorized_statistic_gives_the_interval_of_the_same_statistic_resample_by_resample():
    a, b = [0.1, 0.5, 0.2, 0.9], [0.3, 0.4, 0.6, 1.0]
    assert bootstrap_ci([a, b], lambda x, y: (y - x).mean(-1), vectorized=True) == pytest.approx(
        bootstrap_ci([a, b], lambda x, y: (y - x).mean()))


def test_effect_sizes_by_hand_on_one_sample_and_on_rows_of_resamples():
    # ranks (1, 2, 3) against (1, 3, 2): 1 − 6·Σd²/(n(n²−1)) = 1 − 6·2/24
    assert spearman(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(0.5)
    rows = spearman(np.array([[1.0, 2, 3], [1, 2, 3], [1, 2, 3], [2, 2, 2]]),
                    np.array([[1.0, 3, 2], [3, 2, 1], [5, 5, 5], [1, 2, 3]]))
    assert rows[:3] == pytest.approx([0.5, -1.0, 0.0]) and math.isnan(rows[3])  # constant y: no trend; constant x: none
    assert slope(np.array([0.0, 1, 2]), np.array([1.0, 3, 5])) == pytest.approx(2.0)
    assert spread_of_means(np.array([1.0, 1.0]), np.array([1.1, 1.3])) == pytest.approx(0.2)
