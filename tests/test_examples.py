"""Each example learns for real (fast settings)."""

import importlib

from gpudl.examples import __main__ as examples_cli
from gpudl.examples import xor


def test_xor_learns():
    loss, predictions = xor.train(steps=1500, progress=False)
    assert predictions.tolist() == [0, 1, 1, 0]
    assert loss < 0.05                     # from ~0.69 at chance


# ----------------------------------------------------------------- the model examples, fast
# Each runs its example's ``run(fast=True)`` (seconds on a 2-core CPU) and checks a real
# learning result against chance or a baseline; the full runs reach the README's figures.

def run_fast(name, tmp_path, **settings):
    return importlib.import_module(f"gpudl.examples.{name}").run(
        fast=True, seed=0, out=str(tmp_path), progress=False, **settings)


def test_digits_cnn_learns(tmp_path):
    r = run_fast("digits", tmp_path)
    assert r["test_accuracy"] > 0.8                  # chance 0.1; the full run reaches >= 0.95
    assert r["f1"] > 0.8
    assert r["final_loss"] < r["first_loss"] / 3
    assert (tmp_path / "digits_training.png").stat().st_size > 0


def test_sunspots_lstm_beats_persistence(tmp_path):
    r = run_fast("sunspots", tmp_path)
    assert r["test_mse"] < 0.5 * r["persistence_mse"]
    assert r["final_loss"] < r["first_loss"] / 5


def test_dates_seq2seq_translates(tmp_path):
    r = run_fast("dates", tmp_path)
    assert r["exact_match"] > 0.5                    # all 10 characters right; chance ~0
    assert r["final_loss"] < r["first_loss"] / 5


def test_autoencoder_rebuilds_held_out_digits(tmp_path):
    r = run_fast("autoencoder", tmp_path)
    assert r["test_mse"] < 0.5 * r["mean_image_mse"]
    assert r["final_loss"] < r["first_loss"]
    assert (tmp_path / "autoencoder_reconstructions.png").stat().st_size > 0


def test_vae_beats_the_mean_image_and_uses_its_code(tmp_path):
    # 25 epochs, not the fast run's 10: after 10 the held-out loss was 23.7-25.2 nats by seed
    # (25.1 on the GPU) against the 24.57 needed; after 25, 23.0-23.4 over 8 seeds on the CPU
    # (sd 0.14), KL 2.4-2.7, the training loss 7.2-7.8 lower
    r = run_fast("vae", tmp_path, epochs=25)
    assert r["test_loss"] < r["mean_image_loss"] - 2  # nats per image
    assert r["test_kl"] > 0.5                         # the code carries information
    assert r["final_loss"] < r["first_loss"] - 3
    for png in ("vae_reconstructions.png", "vae_samples.png"):
        assert (tmp_path / png).stat().st_size > 0


def test_dcgan_generator_moves_towards_the_digits(tmp_path):
    r = run_fast("dcgan", tmp_path)
    assert r["mean_image_mse"] < r["mean_image_mse_untrained"] / 3
    assert r["digits_drawn"] >= 5                     # no collapse onto one digit
    assert (tmp_path / "dcgan_samples.png").stat().st_size > 0


def test_transformer_classifies_topics(tmp_path):
    r = run_fast("transformer", tmp_path)
    assert r["test_accuracy"] > 0.6                  # chance 0.25
    assert r["final_loss"] < r["first_loss"] / 2


def test_examples_are_deterministic_given_a_seed(tmp_path):
    a, b = run_fast("sunspots", tmp_path), run_fast("sunspots", tmp_path)
    assert a["test_mse"] == b["test_mse"] and a["first_loss"] == b["first_loss"]


def test_command_line_runs_an_example_and_lists_them(tmp_path, capsys):
    assert examples_cli.main(["autoencoder", "--fast", "--quiet", "--out", str(tmp_path)]) == 0
    assert "reconstructions: " + str(tmp_path) in capsys.readouterr().out
    examples_cli.main(["--list"])
    listed = capsys.readouterr().out
    for name in ("xor", "digits", "sunspots", "dates", "autoencoder", "vae", "dcgan",
                 "transformer"):
        assert name in listed


def test_keras_cnn_listing_learns(tmp_path):
    r = run_fast("keras_cnn", tmp_path)
    assert r["test_accuracy"] > 0.7                  # chance 0.1; the full run reaches >= 0.95
    assert r["final_loss"] < 0.9 * r["first_loss"]
    assert r["params"] == 320 + 18_496 + 64 * 4 * 10 + 10     # Keras's counts, 8x8 input


def test_keras_autoencoder_rebuilds_held_out_digits(tmp_path):
    r = run_fast("keras_autoencoder", tmp_path)
    assert r["test_mse"] < r["mean_image_mse"]
    assert r["final_loss"] < r["first_loss"]
    assert (tmp_path / "keras_autoencoder_reconstructions.png").stat().st_size > 0
