"""Tests of the speech-like audio generator ``attention_lessons.data.dtmf`` (lesson 15)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from attention_lessons import data

SR = 8000


@pytest.fixture(scope="module")
def clean():
    # Nearly noise-free clips (60 dB), so that frequencies and boundaries can be read off the samples.
    return data.dtmf(40, snr_db=60.0, seed=11)


def test_same_seed_gives_identical_clips_labels_and_boundaries():
    a, b = data.dtmf(6, seed=3), data.dtmf(6, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.extras["text"] == b.extras["text"]
    for sa, sb in zip(a.extras["segments"], b.extras["segments"]):
        np.testing.assert_array_equal(sa, sb)
    np.testing.assert_array_equal(a.extras["speed"], b.extras["speed"])
    np.testing.assert_array_equal(a.extras["snr_db"], b.extras["snr_db"])


def test_another_seed_gives_other_clips():
    a, b = data.dtmf(6, seed=3), data.dtmf(6, seed=4)
    assert a.extras["text"] != b.extras["text"]
    assert not np.allclose(a.x, b.x)


def test_shapes_dtypes_and_extras():
    split = data.dtmf(5, max_digits=4, duration=1.0, seed=0)
    assert split.x.shape == (5, 8000) and split.x.dtype == np.float32
    assert split.y.shape == (5, 6) and split.y.dtype == np.int32
    assert split.extras["sample_rate"] == SR
    assert len(split.extras["text"]) == len(split.extras["segments"]) == len(split.extras["seconds"]) == 5
    assert split.extras["speed"].shape == split.extras["snr_db"].shape == (5,)


def test_targets_are_start_keys_end_then_padding():
    split = data.dtmf(30, min_digits=2, max_digits=5, seed=1)
    vocab = data.dtmf_vocabulary()
    for text, row in zip(split.extras["text"], split.y):
        assert 2 <= len(text) <= 5
        expected = [vocab.id("<start>"), *(vocab.id(k) for k in text), vocab.id("<end>")]
        assert row.tolist() == expected + [0] * (7 - len(expected))
        assert "".join(vocab.decode(row)) == text


def test_vocabulary_ids():
    vocab = data.dtmf_vocabulary()
    assert vocab.itos == ["<pad>", "<unk>", "<start>", "<end>", *"0123456789*#"]


def test_only_the_allowed_keys_are_pressed():
    split = data.dtmf(50, keys="12#", seed=2)
    assert set("".join(split.extras["text"])) == set("12#")


def test_segments_are_ordered_inside_the_clip_and_seconds_match_samples(clean):
    for segs, secs, text in zip(clean.extras["segments"], clean.extras["seconds"], clean.extras["text"]):
        assert segs.shape == (len(text), 2) and segs.dtype == np.int64
        flat = segs.ravel()
        assert (np.diff(flat) > 0).all(), "starts and stops strictly increase: no overlap, a pause between tones"
        assert flat[0] >= 0 and flat[-1] <= clean.x.shape[1]
        np.testing.assert_array_equal(secs, segs / SR)


def test_tone_durations_follow_the_speaking_rate():
    for speed in (0.9, 1.5):
        split = data.dtmf(30, speed=speed, seed=5)
        np.testing.assert_array_equal(split.extras["speed"], speed)
        lengths = np.concatenate([np.diff(s, axis=1)[:, 0] for s in split.extras["segments"]]) / SR
        # tones last 0.05-0.10 s at speed 1, divided by the speed; boundaries rounded to one sample
        assert lengths.min() >= 0.05 / speed - 1 / SR and lengths.max() <= 0.10 / speed + 1 / SR


def test_fft_inside_each_true_segment_recovers_the_key_frequencies(clean):
    for wave, segs, text in zip(clean.x, clean.extras["segments"], clean.extras["text"]):
        for key, (a, b) in zip(text, segs):
            piece = wave[a:b].astype(np.float64) * np.hanning(b - a)
            spectrum = np.abs(np.fft.rfft(piece, n=8 * SR))            # zero-padded: 0.125 Hz bins
            hz = np.fft.rfftfreq(8 * SR, d=1 / SR)
            low = hz[np.argmax(np.where(hz < 1100, spectrum, 0))]       # row tones: 697-941 Hz
            high = hz[np.argmax(np.where(hz >= 1100, spectrum, 0))]     # column tones: 1209-1477 Hz
            true_low, true_high = data.DTMF_KEYS[key]
            # detuned by at most 1.5 %; a short Hann-windowed tone's peak is exact to within a few Hz
            assert abs(low - true_low) <= 0.015 * true_low + 3, (key, low)
            assert abs(high - true_high) <= 0.015 * true_high + 3, (key, high)


def test_the_signal_is_silent_outside_the_true_segments(clean):
    for wave, segs in zip(clean.x, clean.extras["segments"]):
        inside = np.zeros(len(wave), bool)
        for a, b in segs:
            inside[a:b] = True
        # 60 dB: noise power is 1e-6 of the tones' power, so outside the segments the RMS is ~1e-3 of inside
        assert np.sqrt(np.mean(wave[~inside] ** 2)) < 3e-3 * np.sqrt(np.mean(wave[inside] ** 2))


def test_signal_to_noise_ratio_is_as_requested():
    split = data.dtmf(20, snr_db=10.0, seed=6)
    measured = []
    for wave, segs in zip(split.x.astype(np.float64), split.extras["segments"]):
        inside = np.zeros(len(wave), bool)
        for a, b in segs:
            inside[a:b] = True
        noise = np.mean(wave[~inside] ** 2)
        tones = np.mean(wave[inside] ** 2) - noise                     # tone and noise powers add
        measured.append(10 * np.log10(tones / noise))
    # the ramps and per-press levels weighted by duration move each clip's ratio by a fraction of a dB
    assert abs(np.mean(measured) - 10.0) < 1.0, measured


def test_faster_speakers_finish_sooner():
    slow = data.dtmf(40, speed=0.9, seed=8)
    fast = data.dtmf(40, speed=1.5, seed=8)
    end = lambda split: np.mean([s[-1, 1] for s in split.extras["segments"]])  # noqa: E731
    assert end(fast) < 0.7 * end(slow)


@pytest.mark.parametrize("kwargs, name", [
    ({"n": -1}, "n"),
    ({"min_digits": 0}, "min_digits"),
    ({"min_digits": 4, "max_digits": 3}, "min_digits"),
    ({"speed": 0.0}, "speed"),
    ({"speed": (1.2, 0.9)}, "speed"),
    ({"speed": (1.0, 2.0, 3.0)}, "speed"),
    ({"snr_db": "loud"}, "snr_db"),
    ({"snr_db": (10.0, 200.0)}, "snr_db"),
    ({"sample_rate": 2000}, "sample_rate"),
    ({"keys": "12A"}, "keys"),
    ({"keys": "11"}, "keys"),
    ({"keys": ""}, "keys"),
    ({"duration": 0.5}, "duration"),
    ({"duration": -1.0}, "duration"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        data.dtmf(2, **kwargs) if "n" not in kwargs else data.dtmf(**kwargs)


def test_duration_error_says_how_long_the_slowest_clip_can_be():
    with pytest.raises(ValueError, match=r"up to 1\.1\d\d s"):
        data.dtmf(2, max_digits=5, speed=0.9, duration=1.0)


def test_data_module_does_not_import_tensorflow():
    code = "import sys, attention_lessons.data as d; d.dtmf(2); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
