"""auto placement: the host with room, most memory left; CPU models spread; why none."""

import pytest

from cortex_app.fit import Fit
from cortex_app.placement import Candidate, NoRoom, choose


def _fits(ok: bool, free: float) -> Fit:
    return Fit(ok, "fits" if ok else f"{free:.0f} MiB free: short", 10_000, free)


@pytest.mark.parametrize("candidates,on_gpu,override,want", [
    # GPUs: only hosts it fits; of those, the one with the most free memory.
    ([Candidate(1, "local", _fits(False, 5_000)), Candidate(2, "a", _fits(True, 40_000)),
      Candidate(3, "b", _fits(True, 70_000))], True, False, 3),
    # A tie goes to the lowest id.
    ([Candidate(3, "b", _fits(True, 40_000)), Candidate(2, "a", _fits(True, 40_000))], True, False, 2),
    # A host whose GPUs cannot be read is no candidate for a GPU model.
    ([Candidate(1, "local", None), Candidate(2, "a", _fits(True, 20_000))], True, False, 2),
    # Overridden: the most free memory, though it fits nowhere.
    ([Candidate(1, "local", _fits(False, 5_000)), Candidate(2, "a", _fits(False, 9_000))], True, True, 2),
    # CPU models: the host running the fewest models; ties to the lowest id.
    ([Candidate(1, "local", None, active=3), Candidate(2, "a", None, active=1), Candidate(3, "b", None, active=1)],
     False, False, 2),
])
def test_choose(candidates, on_gpu, override, want):
    assert choose(candidates, on_gpu, override).host_id == want


@pytest.mark.parametrize("candidates,on_gpu,words", [
    ([], False, "no host answers"),
    ([Candidate(1, "local", None), Candidate(2, "a", None)], True, "no host's GPUs can be read now (local, a)"),
    ([Candidate(1, "local", _fits(False, 5_000)), Candidate(2, "a", _fits(False, 9_000))], True,
     "fits on no host: local: 5000 MiB free: short; a: 9000 MiB free: short"),
])
def test_no_room_says_why(candidates, on_gpu, words):
    with pytest.raises(NoRoom, match=words.replace("(", r"\(").replace(")", r"\)")):
        choose(candidates, on_gpu)
