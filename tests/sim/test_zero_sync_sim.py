"""A whole training step on the cuda device reads nothing back from it (issue 14).

Under Numba's CUDA simulator the cuda device keeps NumPy arrays, and backend.count_read counts
every read of them at the same call sites as CuPy arrays on a GPU: forward, a cross-entropy (or
MSE, or binary cross-entropy) loss, backward, clip_grad_norm_, an optimizer step, a scheduler
step and zero_grad must add nothing to gd.cuda.sync_count(); reading the loss then adds exactly
one. The same steps are watched for implicit reads (``bool()``, ``.item()``, a boolean mask...
of a device array: host_reads.py), which only the simulator's NumPy arrays can show; on a GPU
(tools/gpu_check.sh) the counter alone is checked.
"""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend, models, nn
from host_reads import Watched, watch, watched  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.may_read_device(),
                                 reason="needs the cuda device: a GPU, or NUMBA_ENABLE_CUDASIM=1 "
                                 "with GPUDL_DEVICE=cuda")]


@pytest.fixture(autouse=True)
def _strict_conv_but_once(request, monkeypatch):
    """The TF32 tensor-core conv is emulated lane by lane here (~5x the SIMT kernel's time): one
    case (reads nothing back, SGD) keeps it, so its launches are checked too; the others run the
    strict kernels."""
    if not request.node.name.startswith("test_a_training_step_reads_nothing_back[") \
            or "sgd_momentum" not in request.node.name:
        monkeypatch.setattr(gd.backends.cudnn, "allow_tf32", False)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


class SmallLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(2, 3, batch_first=True)
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class SmallTransformer(nn.Module):
    def __init__(self, dropout=0.1):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=dropout,
                                                batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.layer(x).mean(dim=1))


class SmallAutoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 6), nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


def _autoencoder_batch(net):
    x = gd.rand(2, 6, device="cuda")
    return x, x, F.binary_cross_entropy


def _cnn_batch(net):
    return gd.randn(2, 1, 4, 4, device="cuda"), gd.tensor([0, 2], device="cuda"), F.cross_entropy


def _lstm_batch(net):
    return gd.randn(2, 3, 2, device="cuda"), gd.randn(2, 1, device="cuda"), F.mse_loss


def _transformer_batch(net):
    return gd.randn(2, 3, 4, device="cuda"), gd.tensor([1, 0], device="cuda"), F.cross_entropy


# the tutorials' models (gpudl.models), tiny
def _token_batch(net):
    """Token ids with padding (0) at the end of the second sequence, and class targets."""
    tokens = gd.tensor([[3, 1, 4], [5, 2, 0]], device="cuda")
    return tokens, gd.tensor([2, 0], device="cuda"), F.cross_entropy


def _embedding_lstm():
    return models.LSTMClassifier(3, 4, 3, vocab_size=6, padding_idx=0)


def _padded_transformer():
    """key_padding_mask from the padding tokens: attention and pooling skip them."""
    return models.TransformerClassifier(6, 4, 2, 1, 3, max_len=3, dim_feedforward=8, pad_idx=0)


def _vae():
    return models.VAE((6,), hidden=(4,), latent_dim=2)


def _vae_batch(net):
    x = gd.rand(2, 6, device="cuda")
    return x, x, lambda outputs, target: net.loss(target, *outputs)[0]


def _sgd(params):
    return gd.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)


def _adam(params):
    return gd.optim.Adam(params, lr=1e-3, weight_decay=1e-4)


def _capturable_adamw(params):
    return gd.optim.AdamW(params, lr=1e-3, capturable=True)


MODELS = {"cnn": (SmallCNN, _cnn_batch), "lstm": (SmallLSTM, _lstm_batch),
          "transformer": (SmallTransformer, _transformer_batch),
          "autoencoder_bce": (SmallAutoencoder, _autoencoder_batch)}
OPTIMIZERS = {"sgd_momentum": _sgd, "adam": _adam, "adamw_capturable": _capturable_adamw}
# run with one optimizer each (the simulator is slow)
TUTORIAL_MODELS = {"embedding_lstm": (_embedding_lstm, _token_batch),
                   "transformer_key_padding": (_padded_transformer, _token_batch),
                   "vae": (_vae, _vae_batch),
                   # no dropout: self-attention runs PackedSelfAttention
                   "transformer_packed": (lambda: SmallTransformer(0.0), _transformer_batch)}
ALL_MODELS = {**MODELS, **TUTORIAL_MODELS}


def _training_step(net, opt, scheduler, x, y, loss_fn):
    """The whole step the issue names: forward, loss, backward, clipping, optimizer, scheduler."""
    def step():
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        scheduler.step()
        return loss
    return step


# Reads made around the counter can be seen only on the simulator's NumPy arrays (host_reads.py)
WATCHING = backend._cupy is None


@pytest.mark.parametrize("model, optimizer", [
    *((m, o) for m in MODELS for o in OPTIMIZERS), *((m, "adam") for m in TUTORIAL_MODELS)])
def test_a_training_step_reads_nothing_back(watched, model, optimizer):
    """Counted reads (gd.cuda.sync_count(), on a GPU too) and, on the simulator, implicit ones
    (``Watched``) in the same step."""
    build, batch = ALL_MODELS[model]
    net = build().to("cuda")
    for p in net.parameters():
        watch(p)
    opt = OPTIMIZERS[optimizer](net.parameters())
    scheduler = gd.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y, loss_fn = batch(net)
    watch(x), watch(y)

    step = _training_step(net, opt, scheduler, x, y, loss_fn)

    step()                                  # the first step builds state (plans, buffers)
    before = gd.cuda.sync_count()
    Watched.reads = [] if WATCHING else None
    loss = step()
    assert gd.cuda.sync_count() == before, "a training step read the device"
    assert not Watched.reads, Watched.reads
    loss.item()                             # through the gate: counted, not an implicit read
    assert gd.cuda.sync_count() == before + 1
    assert not Watched.reads, Watched.reads


def test_a_dcgan_step_reads_nothing(watched):
    """Both halves of the DCGAN example's step (gpudl/examples/dcgan.py): the discriminator on
    real and detached fake images, then the generator through it; BatchNorm in both."""
    dcgan = pytest.importorskip("gpudl.examples.dcgan")         # the examples need tqdm
    generator = models.DCGANGenerator(2, image_size=4, base_channels=2).to("cuda")
    discriminator = models.DCGANDiscriminator(image_size=4, base_channels=2).to("cuda")
    for net in (generator, discriminator):
        for t in (*net.parameters(), *net.buffers()):
            watch(t)
    opt_g = gd.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = gd.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = watch(gd.rand(2, 1, 4, 4, device="cuda") * 2 - 1)

    def step():
        noise = gd.randn(2, 2, device="cuda")
        d_loss, g_loss = dcgan.train_step(generator, discriminator, opt_g, opt_d, real, noise)
        return d_loss + g_loss

    step()
    before = gd.cuda.sync_count()
    Watched.reads = []
    loss = step()
    assert gd.cuda.sync_count() == before and Watched.reads == []
    loss.item()
    assert gd.cuda.sync_count() == before + 1 and Watched.reads == []


def test_a_grad_scaler_step_reads_its_flag_once_and_reports_queued_checks(rng):
    """GradScaler.step decides on the host whether the optimizer steps: one counted read (the
    inf flag), which, as every read, first reports the device-side checks queued before it."""
    model = nn.Linear(3, 2)
    opt = gd.optim.SGD(model.parameters(), lr=0.1)
    scaler = gd.amp.GradScaler("cuda")
    x = gd.tensor(rng.standard_normal((4, 3)).astype(np.float32), device="cuda")
    weight = model.weight.detach().numpy().copy()
    for bad_check in (True, False):
        opt.zero_grad()
        scaler.scale(model(x).sum()).backward()
        if bad_check:          # a failed device-side check, queued (backend.defer_check)
            gd.tensor(np.array([3]), device="cuda") // gd.tensor(np.array([0]), device="cuda")
        before = gd.cuda.sync_count()
        if bad_check:
            with pytest.raises(RuntimeError, match="integer division by zero"):
                scaler.step(opt)
        else:
            scaler.step(opt)
        assert gd.cuda.sync_count() == before + 1
        scaler.update()
    assert not np.array_equal(model.weight.detach().numpy(), weight)     # the clean step ran
