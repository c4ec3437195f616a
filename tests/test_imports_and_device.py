"""Module boundaries (NumPy modules never load TensorFlow) and the device helpers."""

import subprocess
import sys

import numpy as np
import pytest

NUMPY_MODULES = ["attention_lessons", "attention_lessons.softmax", "attention_lessons.neurons",
                 "attention_lessons.plotting", "attention_lessons.widgets", "attention_lessons.course",
                 "attention_lessons.grading", "attention_lessons.grading.ex01", "attention_lessons.grading.ex02",
                 "attention_lessons.grading.batch", "attention_lessons.device", "attention_lessons.data",
                 "attention_lessons.attention",
                 "attention_lessons.memory"]


@pytest.mark.parametrize("module", NUMPY_MODULES)
def test_numpy_modules_do_not_import_tensorflow(module):
    code = f"import sys, {module}; bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"{module} imports {done.stdout.strip()}"


def test_set_seed_makes_numpy_draws_repeat():
    from attention_lessons.device import set_seed
    set_seed(7)
    a = np.random.rand(4)
    set_seed(7)
    assert np.array_equal(a, np.random.rand(4))


def test_set_seed_rejects_negative_seed():
    from attention_lessons.device import set_seed
    with pytest.raises(ValueError, match="seed"):
        set_seed(-1)


def test_doctor_reports_versions_and_finds_this_environment_healthy(capsys):
    from attention_lessons.device import doctor
    report = doctor()
    out = capsys.readouterr().out
    assert report.ok, report.problems
    assert report.versions["TensorFlow"] and report.versions["Keras"].startswith("3.")
    assert "TensorFlow" in out and "GPUs" in out


def test_doctor_gives_actionable_advice_when_something_is_off(monkeypatch):
    from attention_lessons import device
    monkeypatch.setattr(device, "_version", lambda m: None if m == "ipywidgets" else "2.0.0" if m == "keras" else "2.21.0")
    report = device.doctor(verbose=False)
    assert not report.ok
    assert any("ipywidgets is missing" in p and "make lab" in p for p in report.problems)
    assert any("Keras 3 is needed" in p for p in report.problems)


def test_doctor_command_exits_zero_on_a_healthy_environment():
    done = subprocess.run([sys.executable, "-m", "attention_lessons.cli", "doctor"], capture_output=True, text=True)
    assert done.returncode == 0 and "Everything the course needs is in place" in done.stdout
