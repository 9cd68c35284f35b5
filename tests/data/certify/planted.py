"""A capability with one planted failure (named 'planted' after this module)."""


def test_holds():
    assert [1, 2] == [1, 2]


def test_planted_failure():
    raise AssertionError("planted: rank 1 disagrees with rank 0")
