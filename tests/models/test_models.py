"""gpudl.models: shapes, gradients to every parameter, state-dict round trips, PyTorch oracles."""

import math

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras, nn
from gpudl.models import (MLP, VAE, Autoencoder, BasicBlock, DCGANDiscriminator, DCGANGenerator,
                          LeNet, LSTMClassifier, LSTMRegressor, Seq2SeqAttention, SmallResNet,
                          TransformerClassifier, sinusoidal_positions)

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")   # fp32 tolerances: no TF32 conv on cuda


def floats(rng, *shape):
    return gd.tensor(rng.standard_normal(shape).astype(np.float32))


def tokens(rng, vocab, *shape):
    """Token ids in [1, vocab), with the last position of row 0 set to 0 (padding)."""
    ids = rng.integers(1, vocab, shape)
    ids[0, -1] = 0
    return gd.tensor(ids)


# name: (model factory, inputs factory, expected output shape)
CASES = {
    "mlp": (lambda: MLP(5, (7, 6), 3, activation="tanh", dropout=0.2),
            lambda r: (floats(r, 4, 5),), (4, 3)),
    "mlp_linear": (lambda: MLP(5, (), 2), lambda r: (floats(r, 1, 5),), (1, 2)),
    "lenet8": (lambda: LeNet(10, 1, 8), lambda r: (floats(r, 3, 1, 8, 8),), (3, 10)),
    "lenet28": (lambda: LeNet(4, 3, 28, dropout=0.1), lambda r: (floats(r, 2, 3, 28, 28),),
                (2, 4)),
    "basic_block": (lambda: BasicBlock(3, 6, stride=2), lambda r: (floats(r, 2, 3, 7, 5),),
                    (2, 6, 4, 3)),
    "basic_block_identity": (lambda: BasicBlock(4, 4), lambda r: (floats(r, 2, 4, 5, 5),),
                             (2, 4, 5, 5)),
    "small_resnet": (lambda: SmallResNet(5, 2, (4, 8), 2), lambda r: (floats(r, 2, 2, 9, 9),),
                     (2, 5)),
    "lstm_regressor": (lambda: LSTMRegressor(3, 5, 2, 2), lambda r: (floats(r, 4, 6, 3),),
                       (4, 2)),
    "lstm_classifier_tokens": (
        lambda: LSTMClassifier(4, 5, 3, num_layers=2, vocab_size=9, padding_idx=0,
                               bidirectional=True),
        lambda r: (tokens(r, 9, 4, 6),), (4, 3)),
    "lstm_classifier_features": (lambda: LSTMClassifier(3, 5, 2),
                                 lambda r: (floats(r, 1, 6, 3),), (1, 2)),
    "seq2seq_dot": (lambda: Seq2SeqAttention(7, 8, 6, 5, attention="dot", pad_idx=0),
                    lambda r: (tokens(r, 7, 3, 5), tokens(r, 8, 3, 4)), (3, 4, 8)),
    "seq2seq_additive": (
        lambda: Seq2SeqAttention(7, 8, 6, 5, num_layers=2, attention="additive"),
        lambda r: (tokens(r, 7, 3, 5), tokens(r, 8, 3, 1)), (3, 1, 8)),
    "autoencoder": (lambda: Autoencoder((1, 4, 4), (8,), 3),
                    lambda r: (floats(r, 5, 1, 4, 4),), (5, 1, 4, 4)),
    "vae": (lambda: VAE((1, 4, 4), (8, 6), 3), lambda r: (floats(r, 5, 1, 4, 4),),
            (5, 1, 4, 4)),
    "dcgan_generator": (lambda: DCGANGenerator(6, 8, 1, 4), lambda r: (floats(r, 3, 6),),
                        (3, 1, 8, 8)),
    "dcgan_generator16": (lambda: DCGANGenerator(6, 16, 3, 4, out_activation="sigmoid"),
                          lambda r: (floats(r, 2, 6),), (2, 3, 16, 16)),
    "dcgan_discriminator": (lambda: DCGANDiscriminator(8, 1, 4),
                            lambda r: (floats(r, 3, 1, 8, 8),), (3, 1)),
    "transformer_learned": (
        lambda: TransformerClassifier(11, 8, 2, 2, 3, 7, dim_feedforward=12, pad_idx=0),
        lambda r: (tokens(r, 11, 3, 5),), (3, 3)),
    "transformer_sinusoidal": (
        lambda: TransformerClassifier(11, 8, 2, 1, 2, 7, positions="sinusoidal", dropout=0.0),
        lambda r: (tokens(r, 11, 2, 7),), (2, 2)),
}


def scalar_loss(model, output, inputs, rng):
    """A loss that uses every output value: VAE's own loss, else a random projection."""
    if isinstance(model, VAE):
        return model.loss(inputs[0].sigmoid(), *output)[0]
    return (output * floats(rng, *output.shape)).sum()


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_shape_and_grads_reach_every_parameter(name, rng):
    make_model, make_inputs, shape = CASES[name]
    model, inputs = make_model(), make_inputs(rng)
    output = model(*inputs)
    first = output[0] if isinstance(output, tuple) else output
    assert first.shape == shape
    scalar_loss(model, output, inputs, rng).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reached {pname}"
        grad = p.grad.numpy()
        assert grad.shape == p.shape and np.isfinite(grad).all(), pname
        assert np.abs(grad).sum() > 0, f"{name}: gradient of {pname} is all zero"


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_round_trip_through_a_file(name, rng, tmp_path):
    make_model, make_inputs, _ = CASES[name]
    source = make_model()
    gd.manual_seed(123)
    target = make_model()                                  # different initial weights
    inputs = make_inputs(rng)
    path = tmp_path / "model.safetensors"
    gd.save(source.state_dict(), path)
    target.load_state_dict(gd.load(path))
    assert list(target.state_dict()) == list(source.state_dict())
    source.eval()
    target.eval()
    a, b = source(*inputs), target(*inputs)
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


# ----------------------------------------------------------------- the same network in PyTorch
def torch_twins():
    """(name, gpudl model, the same architecture in torch, input factory, train mode?)."""
    tnn = pytest.importorskip("torch").nn

    class TorchLSTMRegressor(tnn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = tnn.LSTM(3, 5, 2, batch_first=True)
            self.head = tnn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[1][0][-1])

    lenet = tnn.Module()
    lenet.features = tnn.Sequential(tnn.Conv2d(1, 6, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(2),
                                    tnn.Conv2d(6, 16, 3, padding=1), tnn.ReLU(),
                                    tnn.MaxPool2d(2))
    lenet.classifier = tnn.Sequential(tnn.Flatten(), tnn.Dropout(0), tnn.Linear(64, 120),
                                      tnn.ReLU(), tnn.Dropout(0), tnn.Linear(120, 84), tnn.ReLU(),
                                      tnn.Linear(84, 10))
    lenet.forward = lambda x: lenet.classifier(lenet.features(x))
    generator = tnn.Module()
    generator.project = tnn.Sequential(tnn.Linear(6, 32, bias=False), tnn.BatchNorm1d(32),
                                       tnn.ReLU(), tnn.Unflatten(1, (8, 2, 2)))
    generator.upsample = tnn.Sequential(tnn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False),
                                        tnn.BatchNorm2d(4), tnn.ReLU(),
                                        tnn.ConvTranspose2d(4, 1, 4, 2, 1), tnn.Tanh())
    generator.forward = lambda z: generator.upsample(generator.project(z))
    mlp = tnn.Sequential(tnn.Linear(5, 7), tnn.GELU(), tnn.Linear(7, 3))
    return [
        ("mlp", MLP(5, 7, 3, activation="gelu"), mlp, lambda r: floats(r, 4, 5), True),
        ("lenet", LeNet(10, 1, 8), lenet, lambda r: floats(r, 3, 1, 8, 8), True),
        ("lstm_regressor", LSTMRegressor(3, 5, 2, 2), TorchLSTMRegressor(),
         lambda r: floats(r, 4, 6, 3), True),
        ("dcgan_generator_train", DCGANGenerator(6, 8, 1, 4), generator,
         lambda r: floats(r, 5, 6), True),
        ("dcgan_generator_eval", DCGANGenerator(6, 8, 1, 4), generator,
         lambda r: floats(r, 5, 6), False),
    ]


@pytest.mark.parametrize("index", range(5))
def test_matches_the_same_network_in_pytorch(index, rng):
    torch = pytest.importorskip("torch")
    name, model, twin, make_input, training = torch_twins()[index]
    twin.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    if not training:                          # give BatchNorm running stats worth checking
        for module in list(model.modules())[1:]:
            if hasattr(module, "running_var"):
                module.running_mean.data[...] = rng.standard_normal(module.running_mean.shape)
                module.running_var.data[...] = rng.uniform(0.5, 2, module.running_var.shape)
        twin.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    model.train(training)
    twin.train(training)
    x = make_input(rng)
    y, ty = model(x), twin(torch.tensor(x.numpy()))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-5,
                               err_msg=name)
    weights = rng.standard_normal(y.shape).astype(np.float32)
    (y * gd.tensor(weights)).sum().backward()
    (ty * torch.tensor(weights)).sum().backward()
    grads = dict(twin.named_parameters())
    for pname, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[pname].grad.numpy(), rtol=1e-3,
                                   atol=1e-5, err_msg=f"{name}: {pname}")


def test_transformer_classifier_matches_pytorch_with_padding(rng):
    torch = pytest.importorskip("torch")
    model = TransformerClassifier(11, 8, 2, 2, 3, 7, dim_feedforward=12, pad_idx=0).eval()
    embedding = torch.nn.Embedding(11, 8, padding_idx=0)
    position = torch.nn.Embedding(7, 8)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 12, 0.0, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    head = torch.nn.Linear(8, 3)
    twin = torch.nn.ModuleDict({"embedding": embedding, "position": position,
                                "encoder": encoder, "head": head}).eval()
    twin.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    ids = rng.integers(1, 11, (3, 6))
    ids[0, 3:] = 0                                          # three padded positions
    ids[2, 5:] = 0
    t = torch.tensor(ids)
    pad = t == 0
    h = encoder(embedding(t) + position(torch.arange(6)), src_key_padding_mask=pad)
    keep = (~pad).float().unsqueeze(-1)
    expected = head((h * keep).sum(1) / keep.sum(1))
    np.testing.assert_allclose(model(gd.tensor(ids)).numpy(), expected.detach().numpy(),
                               rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- model-specific behaviour
def test_sinusoidal_positions_formula():
    table = sinusoidal_positions(9, 6)
    for pos in range(9):
        for i in range(6):
            angle = pos / 10000 ** (2 * (i // 2) / 6)
            expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[pos, i] == pytest.approx(expected, abs=1e-6)


def test_vae_loss_is_the_negative_elbo_in_float64(rng):
    model = VAE((1, 3, 3), (5,), 2)
    x = rng.uniform(0, 1, (4, 1, 3, 3))
    logits = rng.standard_normal((4, 1, 3, 3))
    mu, logvar = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    total, reconstruction, kl = model.loss(*(gd.tensor(a) for a in (x, logits, mu, logvar)))
    p = 1 / (1 + np.exp(-logits))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum() / 4
    # KL(N(mu, sigma^2) || N(0, 1)) per dimension = (sigma^2 + mu^2 - 1 - log sigma^2) / 2
    expected_kl = ((np.exp(logvar) + mu ** 2 - 1 - logvar) / 2).sum() / 4
    assert reconstruction.item() == pytest.approx(bce, rel=1e-10)
    assert kl.item() == pytest.approx(expected_kl, rel=1e-10)
    assert total.item() == pytest.approx(bce + expected_kl, rel=1e-10)


def test_vae_reparameterisation_samples_and_passes_gradients(rng):
    model = VAE(4, (5,), 3)
    mu = gd.tensor(rng.standard_normal((20000, 3)), requires_grad=True)
    logvar = gd.tensor(np.log([[0.25, 1.0, 4.0]]).repeat(20000, 0), requires_grad=True)
    z = model.reparameterize(mu, logvar)
    noise = (z - mu).numpy()
    np.testing.assert_allclose(noise.std(axis=0), [0.5, 1.0, 2.0], rtol=0.03)
    assert abs(noise.mean()) < 0.03
    z.sum().backward()
    np.testing.assert_allclose(mu.grad.numpy(), 1.0)       # dz/dmu = 1
    np.testing.assert_allclose(logvar.grad.numpy(), noise / 2, rtol=1e-5, atol=1e-6)
    model.eval()
    assert model.reparameterize(mu, logvar) is mu            # eval mode: the mean code
    assert model.sample(7).shape == (7, 4)


def test_greedy_decode_agrees_with_teacher_forcing_on_its_own_output(rng):
    model = Seq2SeqAttention(9, 10, 8, 12, num_layers=2, attention="additive", pad_idx=0)
    src = tokens(rng, 9, 4, 6)
    generated = model.greedy_decode(src, max_len=5, bos=1)
    assert generated.shape == (4, 5) and generated.dtype == gd.int64
    assert model.training                                   # mode restored
    tgt_in = np.concatenate([np.ones((4, 1), np.int64), generated.numpy()[:, :-1]], axis=1)
    model.eval()
    forced = model(src, gd.tensor(tgt_in)).argmax(dim=-1)  # whole sequence at once
    np.testing.assert_array_equal(forced.numpy(), generated.numpy())


def test_greedy_decode_stops_when_every_sequence_ended(rng):
    model = Seq2SeqAttention(5, 6, 4, 8)
    with gd.no_grad():
        model.out.bias.data[...] = [0, 0, 100, 0, 0, 0]     # token 2 always wins
    out = model.greedy_decode(tokens(rng, 5, 3, 4), max_len=9, bos=1, eos=2)
    np.testing.assert_array_equal(out.numpy(), [[2], [2], [2]])


def test_attention_ignores_padded_source_positions(rng):
    model = Seq2SeqAttention(6, 7, 5, 8, pad_idx=0).eval()
    src = tokens(rng, 6, 2, 5)
    src.data[:, 3:] = 0
    memory, state, mask = model.encode(src)
    _, _, weights = model.decode(tokens(rng, 7, 2, 3), memory, state, mask)
    np.testing.assert_array_equal(weights.numpy()[:, :, 3:], 0.0)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-6)


def test_mlp_trains_keras_style_on_a_nonlinear_problem(rng):
    x = rng.standard_normal((200, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)          # XOR of signs: no linear model fits
    model = MLP(2, (16, 16), 2)
    keras.compile(model, optimizer="adam", loss=nn.CrossEntropyLoss(), metrics=["accuracy"])
    history = keras.fit(model, x, y, batch_size=32, epochs=60, verbose=0)
    assert history["loss"][-1] < history["loss"][0] / 3
    assert keras.evaluate(model, x, y)[1] > 0.9             # a linear model: about 0.5


@pytest.mark.parametrize("build, message", [
    (lambda: MLP(0, (4,), 2), "MLP: in_features must be a positive int, got 0"),
    (lambda: MLP(3, (4, -1), 2), "MLP: hidden[1] must be a positive int, got -1"),
    (lambda: MLP(3, (4,), 2, activation="swish"), "MLP: unknown activation 'swish'"),
    (lambda: MLP(3, (4,), 2, dropout=1.0), "MLP: dropout must be a number in [0, 1)"),
    (lambda: LeNet(image_size=10), "LeNet: image_size must be a multiple of 4"),
    (lambda: SmallResNet(widths=()), "SmallResNet: widths must be a non-empty sequence"),
    (lambda: LSTMRegressor(1, 0), "LSTMRegressor: hidden_size must be a positive int, got 0"),
    (lambda: Seq2SeqAttention(5, 5, attention="cosine"),
     "Seq2SeqAttention: attention must be 'dot' or 'additive', got 'cosine'"),
    (lambda: DCGANGenerator(8, image_size=10), "DCGANGenerator: image_size must be a multiple"),
    (lambda: DCGANGenerator(8, out_activation="relu"), "out_activation must be 'tanh' or"),
    (lambda: TransformerClassifier(5, 8, 2, 1, 2, 4, positions="rotary"),
     "positions must be 'learned' or 'sinusoidal'"),
])
def test_bad_arguments_are_refused_with_a_clear_message(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert message in str(info.value)


def test_transformer_refuses_sequences_longer_than_max_len(rng):
    model = TransformerClassifier(5, 8, 2, 1, 2, max_len=4)
    with pytest.raises(ValueError, match=r"T <= max_len=4, got \(2, 5\)"):
        model(tokens(rng, 5, 2, 5))
