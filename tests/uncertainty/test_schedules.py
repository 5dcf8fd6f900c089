import pytest

from clearmamba.uncertainty import Constant, EpochLinear, PiecewiseLinear, StepContinuous, make_schedule


def test_epoch_linear_steps_once_per_epoch():
    s = EpochLinear(10)
    assert [s(t) for t in (0, 0.9, 1.0, 5.5, 10, 20)] == [0.0, 0.0, 0.1, 0.5, 1.0, 1.0]


def test_step_continuous():
    s = StepContinuous(4)
    assert s(1.0) == pytest.approx(0.25) and s(2.5) == pytest.approx(0.625) and s(9) == 1.0


def test_labml_piecewise_schedule():
    s = PiecewiseLinear(((0.0, 0.0), (0.2, 0.01), (1.0, 1.0)), total_epochs=10)
    assert s(0) == 0.0
    assert s(1) == pytest.approx(0.005)
    assert s(2) == pytest.approx(0.01)
    assert s(6) == pytest.approx(0.01 + 0.99 * 0.5)
    assert s(10) == pytest.approx(1.0) and s(12) == 1.0


def test_make_schedule_and_errors():
    assert make_schedule("constant", value=0.3)(7) == 0.3
    assert isinstance(make_schedule("epoch_linear", anneal_epochs=3), EpochLinear)
    assert Constant()(0) == 1.0
    with pytest.raises(ValueError, match="unknown annealing schedule"):
        make_schedule("cosine")
    with pytest.raises(ValueError, match="strictly increasing"):
        PiecewiseLinear(((0.5, 0.0), (0.2, 1.0)))
