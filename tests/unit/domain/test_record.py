"""The per-fill records (``Record``): compared, hashed, shown and pickled by value like the NamedTuples
they replace, and read-only."""

from __future__ import annotations

import copy
import pickle

import pytest

from processor import native
from processor.domain.fold import Outcome
from processor.domain.state import FundRules, FundState
from processor.pipeline import Emitted

STATE = FundState.opened("USDT", FundRules().policy_for("USDT"))


def test_records_are_equal_by_value_and_only_to_their_own_class() -> None:
    assert Emitted("USDT", "BTCUSDT", b"{}") == Emitted("USDT", "BTCUSDT", b"{}")
    assert Emitted("USDT", "BTCUSDT", b"{}") != Emitted("USDT", "BTCUSDT", b"[]")
    assert (Emitted("USDT", "BTCUSDT") != Emitted("USDT", "BTCUSDT")) is False
    assert Outcome(STATE) == Outcome(STATE, None, None, None, None, None)
    assert Outcome(STATE, conflict="x") != Outcome(STATE, refusal="x")
    assert Emitted("USDT", None) != ("USDT", None)
    assert Outcome(STATE) != Emitted("USDT", None)


def test_equal_records_hash_alike_when_their_values_can_be_hashed() -> None:
    assert hash(Emitted("USDT", "BTCUSDT", b"{}", home=3)) == hash(Emitted("USDT", "BTCUSDT", b"{}", home=3))
    assert len({Emitted("USDT", None), Emitted("USDT", None), Emitted("USDT", None, error="x")}) == 2
    with pytest.raises(TypeError):  # as a tuple holding a list: the headers
        hash(Emitted("USDT", None, headers=[]))


def test_a_record_shows_its_fields_in_order() -> None:
    assert repr(Emitted("USDT", None, error="invalid_event")) == (
        "Emitted(fund='USDT', symbol=None, delta=None, trigger=None, dead_letter=None, "
        "dead_letter_key=None, forward=None, home=-1, headers=None, error='invalid_event', adl_state=None)"
    )


def test_a_record_survives_pickling_and_copying() -> None:
    emitted = Emitted("USDT", "BTCUSDT", b"{}", headers=[("source", b"t:0:1")])
    assert pickle.loads(pickle.dumps(emitted)) == emitted
    assert copy.copy(emitted) == emitted == copy.deepcopy(emitted)
    assert pickle.loads(pickle.dumps(Outcome(STATE, conflict="x"))) == Outcome(STATE, conflict="x")


@pytest.mark.skipif(
    "processor.domain.record" not in native.compiled_modules(), reason="read-only at run time when compiled"
)
def test_a_compiled_record_is_read_only() -> None:
    emitted = Emitted("USDT", None)
    with pytest.raises(AttributeError):
        emitted.fund = "BTC"  # type: ignore[misc]
    assert emitted.fund == "USDT"
