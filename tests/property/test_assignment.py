from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tidelog.groups import assign

events = st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(partitions=st.integers(0, 24), events=events)
def test_assignment_is_always_a_partition_of_the_partitions(
    partitions: int, events: list[tuple[bool, int]]
) -> None:
    members: set[str] = set()
    current: dict[str, list[int]] = {}
    for joins, who in events:
        name = f"m{who}"
        if joins:
            members.add(name)
        else:
            members.discard(name)
        previous = current
        current = assign(partitions, sorted(members), previous)
        owned = [p for ps in current.values() for p in ps]
        if members:
            assert sorted(owned) == list(range(partitions)), "each partition exactly once"
            sizes = [len(ps) for ps in current.values()]
            assert max(sizes) - min(sizes) <= 1, "balanced"
            assert set(current) == members
            # Sticky: a member that stays keeps what it had, up to its fair share.
            for m in members & set(previous):
                kept = set(previous[m]) & set(current[m])
                assert len(kept) >= min(len(previous[m]), partitions // len(members))
        else:
            assert current == {}
