"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008): two rankings mixed into one page.

Like captains picking teams, the ranker with fewer picks so far (a coin flip on a tie) adds its best block not
yet on the page. Each block remembers its team; a click is credited to the team that placed it, and the
page's winner is the team with more clicked blocks. Both rankers get the same exposure in expectation, so
the preference is free of position bias; it needs far fewer users than an A/B test to see a difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

import numpy as np

from data.contracts import Team

Outcome = Literal["a", "b", "tie"]
Item = TypeVar("Item")  # block ids, or candidate indices as the server passes them


def team_draft(
    a: Sequence[Item], b: Sequence[Item], k: int, rng: np.random.Generator
) -> tuple[list[Item], list[Team]]:
    """The interleaved page (at most k blocks) and the team of each of its blocks."""
    page: list[Item] = []
    teams: list[Team] = []
    taken: set[Item] = set()
    cursor = {Team.A: 0, Team.B: 0}
    lists = {Team.A: a, Team.B: b}
    picks = {Team.A: 0, Team.B: 0}

    def next_of(team: Team) -> Item | None:
        ranking, i = lists[team], cursor[team]
        while i < len(ranking) and ranking[i] in taken:
            i += 1
        cursor[team] = i
        return ranking[i] if i < len(ranking) else None

    while len(page) < k:
        if picks[Team.A] != picks[Team.B]:
            team = Team.A if picks[Team.A] < picks[Team.B] else Team.B
        else:
            team = Team.A if rng.random() < 0.5 else Team.B
        item = next_of(team)
        if item is None:  # this ranker ran out: the other one fills the page
            team = Team.B if team is Team.A else Team.A
            item = next_of(team)
            if item is None:
                break
        page.append(item)
        teams.append(team)
        taken.add(item)
        picks[team] += 1
    return page, teams


def credit(teams: Sequence[Team | str], clicked_positions: Iterable[int]) -> Outcome:
    """The page's winner from its clicks (1-based positions); several clicks on one block count once."""
    wins = {"a": 0, "b": 0}
    for pos in set(clicked_positions):
        if 1 <= pos <= len(teams):
            wins[str(Team(teams[pos - 1]))] += 1
    if wins["a"] == wins["b"]:
        return "tie"
    return "a" if wins["a"] > wins["b"] else "b"
