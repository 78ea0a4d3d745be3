"""The torture's plans (tests/support/torture.py) depend on their seed alone, so a failed
iteration replays with the same choices; a CI-sized run covers every kind, target and point."""

from __future__ import annotations

from collections import Counter

from tests.support import torture


def test_a_plan_is_its_seed() -> None:
    for seed in (0, 1, 15_000_007, 2**40 + 3):
        assert torture.Plan.from_seed(seed, torture.HOST_KINDS) == \
            torture.Plan.from_seed(seed, torture.HOST_KINDS)
    assert torture.Plan.from_seed(1, torture.HOST_KINDS) != \
        torture.Plan.from_seed(2, torture.HOST_KINDS)


def test_two_hundred_iterations_cover_every_kind_target_and_point() -> None:
    plans = [torture.Plan.from_seed(torture.iteration_seed(15, n), torture.HOST_KINDS)
             for n in range(200)]
    assert set(Counter(p.kind for p in plans)) == set(torture.HOST_KINDS)
    assert set(Counter(p.target for p in plans)) == set(torture.TARGETS)
    assert {p.point for p in plans} == {"delay", "note", "rollback"}
    assert {p.stage for p in plans if p.point == "rollback"} == {"before", "after"}
    assert set(Counter(p.after for p in plans)) == set(torture.AFTER)
    for plan in plans:
        assert 0.3 <= plan.seconds <= 1.2
        assert 1 <= plan.note <= torture.NOTES[plan.kind]
        assert (plan.point == "rollback") == bool(plan.stage)
        assert (plan.point == "note") <= (plan.target != "warden")
        assert f"seed {plan.seed}:" in plan.describe()


def test_netem_kinds_are_the_vm_tiers_and_every_kind_is_tortured_somewhere() -> None:
    from hostchaos.faults import KINDS

    assert set(torture.HOST_KINDS) | set(torture.NETEM_KINDS) == set(KINDS)
    assert set(torture.NOTES) == set(KINDS)
