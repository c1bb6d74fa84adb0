"""Informativeness of exploration updates, against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from explorer_rundir import informativeness as inf

# p = (0.25, 0.75): H = 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762 = 0.562335 nats
H_QUARTER = 0.25 * math.log(4) + 0.75 * math.log(4 / 3)


def test_uniform_has_entropy_one_and_no_divergence():
    for n in (2, 4, 18):
        uniform = [1 / n] * n
        assert inf.normalised_entropy(uniform) == pytest.approx(1.0)
        assert inf.kl_from_uniform(uniform) == pytest.approx(0.0, abs=1e-12)
        assert not inf.is_informative("distribution", uniform)


def test_one_hot_has_entropy_zero_and_divergence_ln_n():
    one_hot = [0.0, 0.0, 1.0, 0.0]
    assert inf.normalised_entropy(one_hot) == pytest.approx(0.0, abs=1e-12)
    assert inf.kl_from_uniform(one_hot) == pytest.approx(math.log(4))
    assert inf.total_variation(one_hot, [0.25] * 4) == pytest.approx(0.75)  # 3 x 0.25 moved
    assert inf.is_informative("distribution", one_hot)


def test_a_known_two_action_distribution():
    p = [0.25, 0.75]
    assert round(H_QUARTER, 6) == 0.562335
    assert inf.normalised_entropy(p) == pytest.approx(H_QUARTER / math.log(2))  # 0.811278: H in bits
    assert inf.normalised_entropy(p) == pytest.approx(0.811278, abs=1e-6)
    assert inf.kl_from_uniform(p) == pytest.approx(math.log(2) - H_QUARTER)  # 0.130812
    assert inf.kl_from_uniform(p) == pytest.approx(0.130812, abs=1e-6)
    # unnormalised input is renormalised first (the validator's weights): [1, 3] is the same distribution
    assert inf.kl_from_uniform([1.0, 3.0]) == pytest.approx(inf.kl_from_uniform(p))


def test_the_discrete_threshold_sits_near_57_to_43():
    # KL(0.56/0.44) = ln 2 - 0.685930 = 0.0072; KL(0.58/0.42) = ln 2 - 0.680292 = 0.0129
    assert inf.kl_from_uniform([0.56, 0.44]) == pytest.approx(0.007217, abs=1e-5)
    assert not inf.is_informative("distribution", [0.56, 0.44])
    assert inf.is_informative("distribution", [0.58, 0.42])
    assert not inf.is_informative("distribution", [0.51, 0.49])  # rounding noise


def test_bias_size_and_threshold_in_normalised_units():
    assert inf.bias_size([0.03, -0.04]) == pytest.approx((0.04, math.sqrt((0.03**2 + 0.04**2) / 2)))
    assert not inf.is_informative("bias", [0.03, -0.04])
    assert inf.is_informative("bias", [0.0, -0.06])  # the sign does not matter
    assert not inf.is_informative("bias", [0.0, 0.0])


def test_measure_compares_with_the_update_it_replaced():
    first = inf.measure("distribution", [0.25, 0.75])  # replaced the default: uniform
    assert first == {"entropy_norm": pytest.approx(0.811278, abs=1e-6), "kl_uniform_nats": pytest.approx(0.130812),
                     "change_tv": pytest.approx(0.25), "informative": True}
    second = inf.measure("distribution", [0.5, 0.5], previous=[0.25, 0.75])
    assert second["change_tv"] == pytest.approx(0.25) and second["informative"] is False
    assert second["kl_uniform_nats"] == 0.0 and second["entropy_norm"] == 1.0
    bias = inf.measure("bias", [0.1, -0.2], previous=[0.1, 0.05])
    assert bias == {"bias_max_abs": pytest.approx(0.2), "bias_rms": pytest.approx(math.sqrt(0.025)),
                    "change_max_abs": pytest.approx(0.25), "informative": True}
    assert inf.measure("bias", [0.01])["change_max_abs"] == pytest.approx(0.01)  # vs zero bias


def test_invalid_updates_are_refused():
    with pytest.raises(ValueError, match="probability"):
        inf.kl_from_uniform([0.5, -0.1])
    with pytest.raises(ValueError, match="probability"):
        inf.normalised_entropy([0.0, 0.0])
    with pytest.raises(ValueError, match="finite"):
        inf.bias_size([math.nan])
    with pytest.raises(ValueError, match="unknown update kind"):
        inf.measure("logits", [1.0])


def test_staleness_counts_episodes_and_steps_between_source_and_first_use():
    ends = [100, 250, 400, 520]  # episode k ended at ends[k]
    # computed from episode 1 (ended at 250), first used at 400: episode 2 ended in between
    assert inf.staleness(1, 400, ends) == {"staleness_episodes": 1, "staleness_steps": 150}
    # blocking mode: used on the step right after its source episode ended
    assert inf.staleness(1, 250, ends) == {"staleness_episodes": 0, "staleness_steps": 0}
    assert inf.staleness(0, 600, ends) == {"staleness_episodes": 3, "staleness_steps": 500}
    none = {"staleness_episodes": None, "staleness_steps": None}
    assert inf.staleness(1, None, ends) == none  # never applied
    assert inf.staleness(None, 400, ends) == none  # source unknown
    assert inf.staleness(7, 400, ends) == none  # an episode this run never logged


def line(version, values, applied, kind="distribution", source="llm", source_episode=0):
    return {"version": version, "kind": kind, "values": list(values), "source": source,
            "applied_at_step": applied, "source_episode": source_episode}


def test_old_lines_are_measured_in_publication_order():
    lines = [line(1, (0.25, 0.75), 300, source_episode=1), {"source": "fallback", "values": [0.25, 0.75]},
             line(2, (0.25, 0.75), None, source_episode=2), line(3, (0.5, 0.5), 420, source_episode=2)]
    measured = inf.measure_lines(lines, episode_end_steps=[100, 250, 400])
    assert measured[0]["change_tv"] == pytest.approx(0.25) and measured[0]["informative"] is True
    assert (measured[0]["staleness_episodes"], measured[0]["staleness_steps"]) == (0, 50)
    assert "informative" not in measured[1]  # fallback lines stay as they were
    assert measured[2]["change_tv"] == 0.0 and measured[2]["staleness_steps"] is None  # never applied
    assert measured[3]["change_tv"] == pytest.approx(0.25) and measured[3]["informative"] is False
    assert (measured[3]["staleness_episodes"], measured[3]["staleness_steps"]) == (0, 20)
    assert "informative" not in lines[0]  # the input is not modified


def test_summary_counts_only_applied_updates():
    lines = inf.measure_lines([line(1, (0.25, 0.75), 300), line(2, (0.9, 0.1), None), line(3, (0.5, 0.5), 420),
                               line(4, (0.4, 0.6), 500)], episode_end_steps=[100, 250, 400])
    summary = inf.summarise(lines)
    assert summary["updates_informative"] == 2  # versions 1 and 4; 2 was never used
    assert summary["informative_share"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["informative_threshold"] == {"metric": "kl_uniform_nats", "min": 0.01, "unit": "nats"}
    assert summary["guidance_kind"] == "distribution"
    kls = sorted([inf.kl_from_uniform([0.25, 0.75]), 0.0, inf.kl_from_uniform([0.4, 0.6])])
    assert summary["median_kl_uniform_nats"] == pytest.approx(kls[1], abs=1e-6)
    assert summary["median_staleness_steps"] == 320  # of 300 - 100, 420 - 100, 500 - 100
    assert summary["median_staleness_episodes"] == 2  # of 1, 2, 2: episodes 1 (250) and 2 (400) ended after 0
    assert "median_bias_max_abs" not in summary


def test_summary_of_nothing_applied_has_no_share():
    summary = inf.summarise([line(1, (0.1, 0.9), None)], kind="distribution")
    assert summary["updates_informative"] == 0 and summary["informative_share"] is None
    assert summary["median_kl_uniform_nats"] is None
    continuous = inf.summarise([], kind="bias")
    assert continuous["informative_threshold"] == {"metric": "bias_max_abs", "min": 0.05,
                                                   "unit": "normalised action units"}
    assert set(continuous) >= {"median_bias_max_abs", "median_bias_rms", "median_change_max_abs"}
    assert inf.summarise([])["informative_threshold"] is None
