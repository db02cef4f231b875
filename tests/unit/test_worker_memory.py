"""WorkerMemory's gates for the poll timer: the create/resume pass first, then retry delays and blocks."""

from __future__ import annotations

import math

from cml_operator.runtime import WorkerMemory


def test_a_timer_waits_for_the_create_or_resume_pass():
    memory = WorkerMemory()
    assert not memory.timer_may_act(100.0, grace=30.0)  # Kopf started the timer; the create pass is queued
    assert not memory.timer_may_act(129.0, grace=30.0)
    memory.change_pass_ran = True
    assert memory.timer_may_act(129.5, grace=30.0)


def test_a_timer_acts_on_its_own_if_the_create_or_resume_pass_never_comes():
    memory = WorkerMemory()
    assert not memory.timer_may_act(100.0, grace=30.0)
    assert not memory.timer_may_act(129.9, grace=30.0)  # the grace runs from the first tick, not the last
    assert memory.timer_may_act(130.0, grace=30.0)


def test_a_block_holds_until_the_spec_changes_and_a_delay_until_it_passes():
    memory = WorkerMemory()
    memory.block(generation=3, delay=None, clock=10.0)
    assert memory.next_attempt == math.inf
    assert not memory.due(3, 1e9)
    assert memory.due(4, 10.0)
    memory.clear()
    memory.defer(5.0, clock=10.0)
    assert not memory.due(4, 14.9)
    assert memory.due(4, 15.0)


def test_a_timer_stands_down_while_kopf_retries_the_create_pass():
    memory = WorkerMemory(change_pass_ran=True)
    memory.change_retry_at = 102.0  # the create pass failed temporarily; Kopf retries it at 102
    assert not memory.timer_may_act(102.0, grace=30.0)
    assert not memory.timer_may_act(131.9, grace=30.0)
    assert memory.timer_may_act(132.0, grace=30.0)  # the retry never came: the timer takes over
    memory.change_retry_at = None  # the retry ended the chain
    assert memory.timer_may_act(102.5, grace=30.0)


def test_a_spec_change_ends_the_stand_down_as_kopf_may_never_retry_the_old_generation():
    memory = WorkerMemory(change_pass_ran=True, change_retry_at=400.0, change_retry_generation=2)
    assert not memory.timer_may_act(100.0, grace=30.0, generation=2)
    assert memory.timer_may_act(100.0, grace=30.0, generation=3)  # e.g. reverted to a spec already handled
