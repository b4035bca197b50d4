"""PyTorch tutorial-style scripts, each written once against a namespace `T` that is either
`torch` or `gpudl`, run on both with the same initial weights and the same batches; the losses
step by step and the final parameters must agree. Random draws a script needs (noise, dropout
masks) come from NumPy so both libraries see the same numbers; dropout layers train with p=0 in
the comparison (their masks come from each library's own generator)."""

import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.utils.data  # noqa: E402  (T.utils.data below)

import gpudl  # noqa: E402
import gpudl.utils.data  # noqa: E402

# torch's own advice (nn.Transformer with batch_first=False; a backward hook on a module whose
# inputs need no gradient), not ours to act on
pytestmark = [pytest.mark.filterwarnings("ignore:enable_nested_tensor:UserWarning"),
              pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")]


def default_device(T):
    """Where ``T`` makes tensors by default (gpudl: cuda on a GPU machine): a script moves the
    batches it makes from NumPy (``from_numpy`` is always on the cpu) there with ``.to(device)``,
    as a PyTorch script written for a GPU does."""
    return T.get_default_device() if T is torch else gpudl.backend.DEFAULT_DEVICE


def numpy_state(model):
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_numpy_state(T, model, state):
    """The README's port: a state dict of NumPy arrays through T.tensor."""
    model.load_state_dict({k: T.tensor(v) for k, v in state.items()})


def start_from(T, model, init):
    """torch keeps its own initial weights and reports them; gpudl takes torch's."""
    if init is not None:
        load_numpy_state(T, model, init)
    return numpy_state(model)


def compare(script, rtol, atol, loose=(), **kwargs):
    """Run ``script`` on torch, then on gpudl from torch's initial weights; every result must
    agree. Parameters named in ``loose`` get only a bound (Adam's step, lr * steps) where their
    true gradient is zero and the optimizer steps on rounding noise (a key bias under softmax)."""
    theirs = script(torch, init=None, **kwargs)
    ours = script(gpudl, init=theirs["init"], **kwargs)
    assert set(ours) == set(theirs)
    for key in theirs:
        if key == "init":
            continue
        a, b = theirs[key], ours[key]
        if isinstance(a, dict):
            assert set(a) == set(b), key
            for name in a:
                bound = next((v for k, v in loose if k in name), None)
                np.testing.assert_allclose(b[name], a[name], rtol=0 if bound else rtol,
                                           atol=bound or atol, err_msg=f"{key}[{name}]")
        else:
            np.testing.assert_allclose(np.asarray(b, dtype=np.float64),
                                       np.asarray(a, dtype=np.float64), rtol=rtol, atol=atol,
                                       err_msg=key)
    return theirs, ours


# --- 1. the quickstart: Dataset/DataLoader, Sequential, CrossEntropyLoss, SGD, save/load ----

def quickstart(T, init, tmp_path):
    nn, data = T.nn, T.utils.data
    rng = np.random.default_rng(1)
    images = rng.standard_normal((96, 1, 6, 6))
    top, bottom = images[:, 0, :3].sum(axis=(1, 2)), images[:, 0, 3:].sum(axis=(1, 2))
    labels = (top > bottom).astype(np.int64)

    class Blobs(data.Dataset):
        def __init__(self, lo, hi):
            self.x, self.y = images[lo:hi], labels[lo:hi]

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return T.from_numpy(self.x[i]), int(self.y[i])

    train = data.DataLoader(Blobs(0, 64), batch_size=16, shuffle=False)
    test = data.DataLoader(Blobs(64, 96), batch_size=16)

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(36, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 2))

        def forward(self, x):
            return self.linear_relu_stack(self.flatten(x))

    device = default_device(T)
    model = NeuralNetwork().double()
    initial = start_from(T, model, init)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = T.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    losses, accuracies = [], []
    for epoch in range(3):
        model.train()
        for X, y in train:
            X, y = X.to(device), y.to(device)
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        model.eval()
        correct, test_loss = 0, 0.0
        with T.no_grad():
            for X, y in test:
                X, y = X.to(device), y.to(device)
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(T.float).sum().item()
        losses.append(test_loss)
        accuracies.append(correct / 32)
    T.save(model.state_dict(), tmp_path / f"model_{T.__name__}.pth")
    reloaded = NeuralNetwork().double()
    reloaded.load_state_dict(T.load(tmp_path / f"model_{T.__name__}.pth"))
    with T.no_grad():
        held_out = T.from_numpy(images[64:]).to(device)
        same = T.equal(reloaded(held_out), model(held_out))
    return {"init": initial, "losses": losses, "accuracy": accuracies, "reload_same": same,
            "final": numpy_state(model)}


def test_quickstart(tmp_path):
    theirs, ours = compare(quickstart, 1e-10, 1e-12, tmp_path=tmp_path)
    assert ours["reload_same"]


# --- 2. a CNN: Conv2d, BatchNorm2d, Dropout2d, MaxPool2d, OneCycleLR ------------------------

def cnn(T, init, drop=0.0, dtype="float64"):
    nn, F = T.nn, T.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 6, 3)
            self.dropout = nn.Dropout2d(drop)
            self.fc = nn.Linear(6 * 2 * 2, 3)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = self.dropout(F.relu(self.conv2(x)))
            x = T.flatten(x, 1)
            return F.log_softmax(self.fc(x), dim=1)

    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 1, 8, 8))
    y = rng.integers(0, 3, 40)
    dtype, device = getattr(T, dtype), default_device(T)
    model = Net().to(dtype)
    initial = start_from(T, model, init)
    optimizer = T.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = T.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, steps_per_epoch=4,
                                                epochs=3)
    losses, lrs = [], []
    for epoch in range(3):
        model.train()
        for b in range(4):
            data = T.from_numpy(x[b * 10:(b + 1) * 10]).to(device, dtype)
            target = T.from_numpy(y[b * 10:(b + 1) * 10]).to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            lrs.append(scheduler.get_last_lr()[0])
    model.eval()
    with T.no_grad():
        test_loss = F.nll_loss(model(T.from_numpy(x).to(device, dtype)),
                               T.from_numpy(y).to(device), reduction="sum").item()
    return {"init": initial, "losses": losses, "lrs": lrs, "test_loss": test_loss,
            "final": numpy_state(model)}


def test_cnn_batchnorm_onecycle():
    compare(cnn, 1e-9, 1e-11)


@pytest.mark.usefixtures("strict_fp32_conv")     # fp32's tolerances: no TF32 convolutions on cuda
def test_cnn_batchnorm_onecycle_float32():
    compare(cnn, 2e-4, 1e-5, dtype="float32")


def test_dropout2d_zeroes_whole_channels():
    for T in (torch, gpudl):
        layer = T.nn.Dropout2d(0.5)
        out = layer(T.ones(8, 16, 3, 3)).numpy()
        per_channel = out.reshape(8 * 16, 9)
        assert set(np.unique(per_channel)) <= {0.0, 2.0}
        assert (per_channel.min(1) == per_channel.max(1)).all(), T.__name__


# --- 3. char-level LSTM: pad_sequence, pack_padded_sequence, pad_packed_sequence, clipping --

def char_lstm(T, init):
    nn = T.nn
    rnn_utils = T.nn.utils.rnn
    text = ["hello world", "hi", "hold the door", "whale", "oh no", "wow"]
    vocab = sorted(set("".join(text)))
    stoi = {c: i + 1 for i, c in enumerate(vocab)}       # 0 is padding

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(len(vocab) + 1, 8, padding_idx=0)
            self.lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True)
            self.head = nn.Linear(12, len(vocab) + 1)

        def forward(self, seqs, lengths):
            packed = rnn_utils.pack_padded_sequence(self.embed(seqs), lengths.cpu(),
                                                    batch_first=True, enforce_sorted=False)
            out, (h, c) = self.lstm(packed)
            out, out_lengths = rnn_utils.pad_packed_sequence(out, batch_first=True)
            return self.head(out), h

    model = CharLM().double()
    initial = start_from(T, model, init)
    optimizer = T.optim.RMSprop(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss(ignore_index=0)
    losses, norms = [], []
    for step in range(6):
        batch = text[(step % 2) * 3:(step % 2) * 3 + 3]
        seqs = [T.tensor([stoi[c] for c in s]) for s in batch]
        inputs = rnn_utils.pad_sequence([s[:-1] for s in seqs], batch_first=True)
        targets = rnn_utils.pad_sequence([s[1:] for s in seqs], batch_first=True)
        lengths = T.tensor([len(s) - 1 for s in batch])
        optimizer.zero_grad()
        logits, h = model(inputs, lengths)
        loss = criterion(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)))
        optimizer.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "norms": norms, "h": h.detach().cpu().numpy(),
            "final": numpy_state(model)}


def test_char_lstm_packed():
    compare(char_lstm, 1e-9, 1e-11)


# --- 4. seq2seq GRU with dot attention and teacher forcing ----------------------------------

def seq2seq(T, init):
    nn, F = T.nn, T.nn.functional
    SOS, vocab, hidden = 0, 7, 10

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, hidden)
            self.gru = nn.GRU(hidden, hidden, batch_first=True)

        def forward(self, src):
            return self.gru(self.embedding(src))

    class AttnDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(vocab, hidden)
            self.gru = nn.GRU(2 * hidden, hidden, batch_first=True)
            self.out = nn.Linear(hidden, vocab)

        def forward_step(self, token, h, enc_out):
            scores = T.bmm(h.permute(1, 0, 2), enc_out.transpose(1, 2))    # (B, 1, S)
            context = T.bmm(F.softmax(scores, dim=-1), enc_out)
            emb = self.embedding(token)
            out, h = self.gru(T.cat((emb, context), dim=2), h)
            return self.out(out), h

    encoder, decoder = Encoder().double(), AttnDecoder().double()
    initial = {"enc": start_from(T, encoder, None if init is None else init["enc"]),
               "dec": start_from(T, decoder, None if init is None else init["dec"])}
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = T.optim.AdamW(params, lr=0.01)
    coin = random.Random(0)
    data = np.random.default_rng(4).integers(1, vocab, (6, 4, 5))
    losses = []
    for src_np in data:
        src = T.from_numpy(src_np).to(default_device(T))
        tgt = T.flip(src, dims=[1])                       # learn to reverse
        enc_out, h = encoder(src)
        token = T.full((4, 1), SOS, dtype=T.long)
        outputs = []
        for t in range(5):
            logits, h = decoder.forward_step(token, h, enc_out)
            outputs.append(logits)
            if coin.random() < 0.5:
                token = tgt[:, t].unsqueeze(1)             # teacher forcing
            else:
                token = logits.argmax(-1).detach()
        logits = T.cat(outputs, dim=1)
        loss = F.cross_entropy(logits.view(-1, vocab), tgt.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "enc": numpy_state(encoder),
            "dec": numpy_state(decoder)}


def test_seq2seq_attention():
    compare(seq2seq, 1e-9, 1e-11)


# --- 5. transformer LM: nn.Transformer, causal mask, positional encoding buffer -------------

def transformer_lm(T, init, dtype="float64"):
    nn = T.nn
    d_model, vocab, length = 16, 11, 6

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, max_len=32):
            super().__init__()
            position = T.arange(max_len).unsqueeze(1)
            div_term = T.exp(T.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = T.zeros(max_len, 1, d_model)
            pe[:, 0, 0::2] = T.sin(position * div_term)
            pe[:, 0, 1::2] = T.cos(position * div_term)
            self.register_buffer("pe", pe)

        def forward(self, x):                              # (S, B, E)
            return x + self.pe[:x.size(0)]

    class Seq2SeqTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.pos = PositionalEncoding(d_model)
            self.transformer = nn.Transformer(d_model, nhead=2, num_encoder_layers=1,
                                              num_decoder_layers=2, dim_feedforward=24,
                                              dropout=0.0)
            self.generator = nn.Linear(d_model, vocab)

        def forward(self, src, tgt, src_pad):
            tgt_mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(0))
            s = self.pos(self.embed(src) * math.sqrt(d_model))
            t = self.pos(self.embed(tgt) * math.sqrt(d_model))
            out = self.transformer(s, t, tgt_mask=tgt_mask, src_key_padding_mask=src_pad,
                                   memory_key_padding_mask=src_pad)
            return self.generator(out)

    model = Seq2SeqTransformer().to(getattr(T, dtype))
    initial = start_from(T, model, init)
    optimizer = T.optim.Adam(model.parameters(), lr=3e-3)
    warmup = T.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 3))
    data = np.random.default_rng(5).integers(2, vocab, (5, length, 3))
    losses = []
    for src_np in data:
        src = T.from_numpy(src_np).to(default_device(T))
        src_pad = T.zeros(3, length, dtype=T.bool)
        src_pad[0, -2:] = True                             # the first sequence is shorter
        tgt = T.cat([T.ones(1, 3, dtype=T.long), src], dim=0)
        logits = model(src, tgt[:-1], src_pad)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt[1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "pe": model.pos.pe.cpu().numpy(),
            "final": numpy_state(model)}


def test_transformer_lm():
    compare(transformer_lm, 1e-8, 1e-10)


def test_transformer_lm_float32():
    compare(transformer_lm, 2e-4, 2e-5, loose=[("in_proj_bias", 5 * 3e-3)], dtype="float32")


# --- 6. a decoder-only LM: TransformerDecoder over a memory, is_causal masks ---------------

def decoder_lm(T, init):
    nn = T.nn
    vocab, d_model = 9, 12

    class DecoderOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Parameter(T.zeros(1, 8, d_model))
            layer = nn.TransformerDecoderLayer(d_model, 3, dim_feedforward=20, dropout=0.0,
                                               batch_first=True, norm_first=True,
                                               activation="gelu")
            self.decoder = nn.TransformerDecoder(layer, num_layers=2, norm=nn.LayerNorm(d_model))
            self.head = nn.Linear(d_model, vocab, bias=False)

        def forward(self, idx, prefix):
            x = self.tok(idx) + self.pos[:, :idx.size(1)]
            mask = nn.Transformer.generate_square_subsequent_mask(idx.size(1))
            return self.head(self.decoder(x, self.tok(prefix), tgt_mask=mask, tgt_is_causal=True))

    model = DecoderOnly().double()
    initial = start_from(T, model, init)
    optimizer = T.optim.NAdam(model.parameters(), lr=5e-3)
    seqs = np.random.default_rng(6).integers(0, vocab, (5, 4, 8))
    losses = []
    for batch in seqs:
        idx = T.from_numpy(batch).to(default_device(T))
        logits = model(idx[:, :-1], idx[:, :2])
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), idx[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "final": numpy_state(model)}


def test_decoder_only_lm():
    compare(decoder_lm, 1e-8, 1e-10)


# --- 7. a VAE: reparameterisation, KL term, BCE reconstruction ------------------------------

def vae(T, init):
    nn, F = T.nn, T.nn.functional

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 12)
            self.fc21 = nn.Linear(12, 3)
            self.fc22 = nn.Linear(12, 3)
            self.fc3 = nn.Linear(3, 12)
            self.fc4 = nn.Linear(12, 16)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar, eps):
            std = T.exp(0.5 * logvar)
            return mu + eps * std

        def forward(self, x, eps):
            mu, logvar = self.encode(x.view(-1, 16))
            z = self.reparameterize(mu, logvar, eps)
            return T.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

    rng = np.random.default_rng(7)
    x = rng.uniform(size=(6, 8, 4, 4))
    noise = rng.standard_normal((6, 8, 3))
    model = VAE().double()
    initial = start_from(T, model, init)
    optimizer = T.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for batch, eps in zip(x, noise):
        data = T.from_numpy(batch).to(default_device(T))
        eps = T.from_numpy(eps).to(data.device)
        recon, mu, logvar = model(data, eps)
        bce = F.binary_cross_entropy(recon, data.view(-1, 16), reduction="sum")
        kld = -0.5 * T.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = bce + kld
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "final": numpy_state(model)}


def test_vae():
    compare(vae, 1e-9, 1e-11)


# --- 8. a GAN step: detach, two optimizers, BCEWithLogitsLoss, LeakyReLU --------------------

def gan(T, init):
    nn = T.nn
    G = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2, inplace=True), nn.Linear(16, 6),
                      nn.Tanh()).double()
    D = nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)).double()
    initial = {"G": start_from(T, G, None if init is None else init["G"]),
               "D": start_from(T, D, None if init is None else init["D"])}
    criterion = nn.BCEWithLogitsLoss()
    opt_d = T.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_g = T.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    rng = np.random.default_rng(8)
    d_losses, g_losses = [], []
    for step in range(6):
        real = T.from_numpy(rng.standard_normal((8, 6)) * 0.5 + 1.0).to(default_device(T))
        z = T.from_numpy(rng.standard_normal((8, 4))).to(real.device)
        real_label, fake_label = T.ones(8, 1, dtype=T.float64), T.zeros(8, 1, dtype=T.float64)
        D.zero_grad()
        fake = G(z)
        loss_d = criterion(D(real), real_label) + criterion(D(fake.detach()), fake_label)
        loss_d.backward()
        opt_d.step()
        G.zero_grad()
        loss_g = criterion(D(fake), real_label)
        loss_g.backward()
        opt_g.step()
        d_losses.append(loss_d.item())
        g_losses.append(loss_g.item())
    return {"init": initial, "d_losses": d_losses, "g_losses": g_losses, "G": numpy_state(G),
            "D": numpy_state(D)}


def test_gan_step():
    compare(gan, 1e-9, 1e-11)


# --- 9. a custom autograd.Function and gradient clipping by register_hook -------------------

def custom_function(T, init):
    nn = T.nn

    class LegendrePolynomial3(T.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    x = T.linspace(-math.pi, math.pi, 50, dtype=T.float64)
    y = T.sin(x)
    layer = nn.Linear(1, 4).double()
    readout = nn.Linear(4, 1).double()
    model = nn.ModuleDict({"layer": layer, "readout": readout})
    initial = start_from(T, model, init)
    for p in model.parameters():
        p.register_hook(lambda grad: grad.clamp(-0.5, 0.5))
    seen = []
    optimizer = T.optim.SGD(model.parameters(), lr=0.05)
    losses, hidden_grad_norms = [], []
    for t in range(8):
        h = LegendrePolynomial3.apply(T.tanh(model["layer"](x.unsqueeze(1))))
        h.register_hook(lambda g: seen.append(g.norm().item()))
        y_pred = model["readout"](h).squeeze(1)
        loss = (y_pred - y).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "hidden_grad_norms": seen,
            "final": numpy_state(model)}


def test_custom_function_and_hooks():
    compare(custom_function, 1e-10, 1e-12)


# --- 10. a residual net: ReLU(inplace=True), out += identity, init by apply, warmup+cosine --

def resnet(T, init):
    nn = T.nn

    class BasicBlock(nn.Module):
        def __init__(self, planes):
            super().__init__()
            self.conv1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += identity
            out = self.relu(out)
            return out

    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), BasicBlock(4),
                          BasicBlock(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).double()

    def init_weights(m):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    model.apply(init_weights)
    conv_std = model[0].weight.std().item()
    initial = start_from(T, model, init)
    optimizer = T.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    warmup = T.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=3)
    cosine = T.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5, eta_min=1e-3)
    scheduler = T.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])
    rng = np.random.default_rng(10)
    device = default_device(T)
    losses, lrs = [], []
    for step in range(8):
        x = T.from_numpy(rng.standard_normal((6, 2, 5, 5))).to(device)
        y = T.from_numpy(rng.integers(0, 3, 6)).to(device)
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    return {"init": initial, "losses": losses, "lrs": lrs, "final": numpy_state(model),
            "conv_std_ok": abs(conv_std / math.sqrt(2 / (4 * 9)) - 1) < 0.5}


def test_resnet_inplace_schedules():
    theirs, ours = compare(resnet, 1e-9, 1e-11)
    assert ours["conv_std_ok"]


# --- 11. LBFGS with a closure ---------------------------------------------------------------

def lbfgs(T, init):
    nn = T.nn
    rng = np.random.default_rng(11)
    device = default_device(T)
    x = T.from_numpy(rng.standard_normal((40, 3))).to(device)
    y = T.from_numpy((rng.standard_normal(40) > 0).astype(np.float64)).to(device)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    initial = start_from(T, model, init)
    optimizer = T.optim.LBFGS(model.parameters(), lr=1, max_iter=10, history_size=5,
                              line_search_fn="strong_wolfe")
    criterion = nn.BCEWithLogitsLoss()
    evaluations = []

    def closure():
        optimizer.zero_grad()
        loss = criterion(model(x).squeeze(-1), y) + 1e-3 * sum(p.pow(2).sum()
                                                               for p in model.parameters())
        loss.backward()
        evaluations.append(loss.item())
        return loss

    losses = [optimizer.step(closure).item() for _ in range(3)]
    return {"init": initial, "losses": losses, "evaluations": evaluations,
            "final": numpy_state(model)}


def test_lbfgs_closure():
    compare(lbfgs, 1e-7, 1e-9)


# --- 12. checkpoint and resume: model, optimizer and scheduler state; freezing a layer -------

def resume(T, init, tmp_path):
    nn, F = T.nn, T.nn.functional
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((8, 6, 5)), rng.standard_normal((8, 6, 2))
    device = default_device(T)

    def build():
        model = nn.Sequential(nn.Linear(5, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 8),
                              nn.SiLU(), nn.Linear(8, 2)).double()
        optimizer = T.optim.RAdam([{"params": model[0].parameters(), "lr": 3e-3},
                                   {"params": list(model[2:].parameters())}], lr=1e-2,
                                  weight_decay=1e-2)
        scheduler = T.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 5], gamma=0.5)
        return model, optimizer, scheduler

    def train(model, optimizer, scheduler, steps, losses):
        for step in steps:
            loss = F.smooth_l1_loss(model(T.from_numpy(x[step]).to(device)),
                                    T.from_numpy(y[step]).to(device), beta=0.5)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())

    model, optimizer, scheduler = build()
    initial = start_from(T, model, init)
    losses = []
    train(model, optimizer, scheduler, range(4), losses)
    path = tmp_path / f"checkpoint_{T.__name__}.pt"
    T.save({"epoch": 4, "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict()}, path)
    model, optimizer, scheduler = build()
    checkpoint = T.load(path)
    model.load_state_dict(checkpoint["model_state_dict"])
    optimizer.load_state_dict(checkpoint["optimizer_state_dict"])
    scheduler.load_state_dict(checkpoint["scheduler_state_dict"])
    train(model, optimizer, scheduler, range(checkpoint["epoch"], 8), losses)
    # fine-tune the head only
    for p in model[0].parameters():
        p.requires_grad_(False)
    frozen = model[0].weight.clone()
    head = T.optim.Adamax(filter(lambda p: p.requires_grad, model.parameters()), lr=1e-2)
    train(model, head, T.optim.lr_scheduler.ExponentialLR(head, 0.9), range(8), losses)
    assert T.equal(frozen, model[0].weight)
    return {"init": initial, "losses": losses, "lr": [g["lr"] for g in optimizer.param_groups],
            "final": numpy_state(model)}


def test_checkpoint_resume_and_freeze(tmp_path):
    compare(resume, 1e-9, 1e-11, tmp_path=tmp_path)


# --- 13. activations, losses, ParameterList/ParameterDict, per-group optimizers --------------

def activations_losses(T, init):
    nn, F = T.nn, T.nn.functional

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(4)])
            self.acts = nn.ModuleList([nn.Mish(), nn.Hardswish(), nn.ELU(alpha=0.7), nn.SELU(),
                                       nn.Softplus(beta=2.0), nn.PReLU(4), nn.CELU(2.0),
                                       nn.Softsign()])
            self.scales = nn.ParameterList([nn.Parameter(T.ones(4)) for _ in range(2)])
            self.extra = nn.ParameterDict({"shift": nn.Parameter(T.zeros(4)),
                                           "temp": nn.Parameter(T.ones(1))})

        def forward(self, x):
            for i, layer in enumerate(self.layers):
                x = self.acts[2 * i + 1](self.acts[2 * i](layer(x)))
            scaled = (x * self.scales[0] + self.extra["shift"]) / self.extra["temp"]
            return scaled, x * self.scales[1]

    model = Mixer().double()
    initial = start_from(T, model, init)
    optimizer = T.optim.Adagrad([{"params": model.layers.parameters()},
                                 {"params": model.acts.parameters(), "lr": 0.02},
                                 {"params": list(model.scales) + list(model.extra.values()),
                                  "lr": 0.005}], lr=0.05, lr_decay=0.01)
    scheduler = T.optim.lr_scheduler.ChainedScheduler(
        [T.optim.lr_scheduler.ConstantLR(optimizer, factor=0.5, total_iters=2),
         T.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)])
    rng = np.random.default_rng(13)
    device = default_device(T)
    losses = []
    for step in range(6):
        x = T.from_numpy(rng.standard_normal((5, 4))).to(device)
        target = T.from_numpy(rng.standard_normal((5, 4))).to(device)
        a, b = model(x)
        loss = (nn.HuberLoss(delta=0.7)(a, target) + nn.L1Loss()(b, target)
                + nn.KLDivLoss(reduction="batchmean")(F.log_softmax(a, -1), F.softmax(target, -1))
                + nn.CosineEmbeddingLoss(margin=0.1)(a, b, T.tensor([1, -1, 1, -1, 1],
                                                                    device=device))
                + nn.MarginRankingLoss(0.2)(a[:, 0], b[:, 0], T.sign(target[:, 0]))
                + nn.TripletMarginLoss(margin=0.5)(a, b, target)
                + F.mse_loss(a, target, reduction="sum") * 0.01)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), 0.3)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "final": numpy_state(model),
            "lrs": scheduler.get_last_lr(),
            "flat": nn.utils.parameters_to_vector(model.parameters()).detach().cpu().numpy()}


def test_activations_losses_parameter_containers():
    compare(activations_losses, 1e-9, 1e-11)


# --- 14. a conv autoencoder: padding layers, ConvTranspose2d, GroupNorm, warm restarts ------

def conv_autoencoder(T, init):
    nn = T.nn
    model = nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(),
        nn.ReplicationPad2d((0, 1, 0, 1)), nn.AvgPool2d(2),
        nn.ZeroPad2d(1), nn.Conv2d(4, 6, 3, stride=1), nn.Hardtanh(-2, 2),
        nn.ConvTranspose2d(6, 4, 2, stride=2), nn.LeakyReLU(0.1),
        nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4, 1, 3, padding=1),
        nn.AdaptiveAvgPool2d((8, 8)), nn.Sigmoid()).double()
    initial = start_from(T, model, init)
    optimizer = T.optim.ASGD(model.parameters(), lr=0.05, t0=3)
    scheduler = T.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=2, T_mult=2)
    plateau_opt = T.optim.SGD([nn.Parameter(T.zeros(1))], lr=1.0)
    plateau = T.optim.lr_scheduler.ReduceLROnPlateau(plateau_opt, factor=0.5, patience=1)
    rng = np.random.default_rng(14)
    images = rng.uniform(size=(7, 3, 1, 8, 8))
    device = default_device(T)
    losses, plateau_lrs = [], []
    for epoch, batch in enumerate(images):
        x = T.from_numpy(batch).to(device)
        loss = nn.functional.binary_cross_entropy(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        plateau.step(round(loss.item(), 3) if epoch < 3 else 1.0)
        losses.append(loss.item())
        plateau_lrs.append(plateau_opt.param_groups[0]["lr"])
    return {"init": initial, "losses": losses, "plateau_lrs": plateau_lrs,
            "final": numpy_state(model)}


def test_conv_autoencoder_padding_restarts():
    compare(conv_autoencoder, 1e-9, 1e-11)


# --- 15. in-place edits through views in a forward pass; an input gradient by autograd.grad --

def views_and_input_gradient(T, init):
    nn = T.nn
    critic = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 1)).double()
    initial = start_from(T, critic, init)
    optimizer = T.optim.Adam(critic.parameters(), lr=1e-2, amsgrad=True)
    rng = np.random.default_rng(15)
    device = default_device(T)
    losses, input_grads = [], []
    for step in range(5):
        x = T.from_numpy(rng.standard_normal((4, 6))).to(device).requires_grad_()
        fake = T.from_numpy(rng.standard_normal((4, 6))).to(device)
        h = x.clone()
        h[:, 1:] += h[:, :-1] * 0.5                       # in place through a slice
        h.masked_fill_(h > 1.5, 1.5)
        h.t()[0].mul_(2)                                   # through a transpose, then a row
        h[[0, 2]] = h[[0, 2]].flip(0)                      # advanced-index write
        alpha = T.from_numpy(rng.uniform(size=(4, 1))).to(device)
        mixed = (alpha * h + (1 - alpha) * fake).detach().requires_grad_(True)
        score = critic(mixed)
        grad, = T.autograd.grad(score.sum(), mixed)
        adversarial = mixed.detach() + 0.1 * grad.sign()   # an FGSM-style step
        loss = critic(fake).mean() - critic(h).mean() + critic(adversarial).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        input_grads.append(x.grad.cpu().numpy().copy())
    return {"init": initial, "losses": losses, "input_grads": input_grads,
            "final": numpy_state(critic)}


def test_views_inplace_and_input_gradient():
    compare(views_and_input_gradient, 1e-9, 1e-11)


def gradient_penalty(T, init):
    """WGAN-GP's critic step: the penalty on the input gradient's norm needs create_graph."""
    nn = T.nn
    critic = nn.Sequential(nn.Linear(6, 10), nn.LeakyReLU(0.2, inplace=True),
                           nn.Linear(10, 10), nn.Softplus(), nn.Linear(10, 1)).double()
    initial = start_from(T, critic, init)
    optimizer = T.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.5, 0.9))
    rng = np.random.default_rng(16)
    device = default_device(T)
    losses, penalties = [], []
    for step in range(4):
        real, fake = (T.from_numpy(rng.standard_normal((8, 6)) + shift).to(device)
                      for shift in (1, 0))
        alpha = T.from_numpy(rng.uniform(size=(8, 1))).to(device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        grad, = T.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
        penalty = ((grad.norm(2, dim=1) - 1) ** 2).mean()
        loss = critic(fake).mean() - critic(real).mean() + 10 * penalty
        losses.append(loss.item())
        penalties.append(penalty.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"init": initial, "losses": losses, "penalties": penalties,
            "final": numpy_state(critic)}


def test_gradient_penalty_critic_steps():
    compare(gradient_penalty, 1e-9, 1e-11)


# --- 16. a bidirectional GRU classifier: pack_sequence, attention pooling, CyclicLR ----------

def bigru_classifier(T, init):
    nn, F = T.nn, T.nn.functional
    rnn_utils = nn.utils.rnn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 5, batch_first=True, bidirectional=True)
            self.attn = nn.MultiheadAttention(10, 2, batch_first=True)
            self.out = nn.Linear(20, 2)

        def forward(self, seqs):
            packed = rnn_utils.pack_sequence(seqs)                 # sorted, longest first
            out, h = self.gru(packed)
            padded, lengths = rnn_utils.pad_packed_sequence(out, batch_first=True)
            lengths = lengths.to(padded.device)                   # returned on the cpu
            pad_mask = T.arange(padded.size(1), device=padded.device)[None, :] >= lengths[:, None]
            pooled, weights = self.attn(padded, padded, padded, key_padding_mask=pad_mask)
            pooled = pooled.masked_fill(pad_mask.unsqueeze(-1), 0).sum(1) / lengths[:, None]
            final = T.cat([h[-2], h[-1]], dim=1)
            back = rnn_utils.unpack_sequence(out)
            return self.out(T.cat([pooled, final], dim=1)), weights, back

    model = Classifier().double()
    initial = start_from(T, model, init)
    optimizer = T.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = T.optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.01, max_lr=0.1,
                                              step_size_up=2, mode="triangular2")
    rng = np.random.default_rng(16)
    device = default_device(T)
    losses, lrs = [], []
    for step in range(6):
        lengths = sorted(rng.integers(1, 6, 4), reverse=True)
        seqs = [T.from_numpy(rng.standard_normal((n, 3))).to(device) for n in lengths]
        labels = T.tensor([int(s.sum() > 0) for s in seqs], device=device)
        logits, weights, back = model(seqs)
        assert [b.shape[0] for b in back] == [int(n) for n in lengths]
        loss = F.cross_entropy(logits, labels, weight=T.tensor([0.7, 1.3], dtype=T.float64,
                                                               device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        lrs.append(scheduler.get_last_lr()[0])
    return {"init": initial, "losses": losses, "lrs": lrs,
            "weights": weights.detach().cpu().numpy(), "final": numpy_state(model)}


def test_bigru_packed_attention_cyclic():
    compare(bigru_classifier, 1e-9, 1e-11)


# --- 17. the transfer-learning tutorial's loop: set_grad_enabled, deepcopy of the best
#         weights, forward hooks, StepLR; Subset/ConcatDataset, drop_last, a collate_fn --------

def finetune(T, init):
    import copy
    nn, data = T.nn, T.utils.data
    rng = np.random.default_rng(17)
    x = rng.standard_normal((60, 3, 4, 4))
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    full = data.TensorDataset(T.from_numpy(x), T.from_numpy(y))
    train_set = data.ConcatDataset([data.Subset(full, range(0, 20)),
                                    data.Subset(full, range(20, 44))])
    val_set = data.Subset(full, list(range(44, 60)))

    def collate(batch):
        images, labels = zip(*batch)
        return T.stack(images).flip(-1), T.stack(labels)   # a fixed "augmentation"

    loaders = {"train": data.DataLoader(train_set, batch_size=10, shuffle=False,
                                        drop_last=True, collate_fn=collate),
               "val": data.DataLoader(val_set, batch_size=8)}
    sizes = {"train": 40, "val": len(val_set)}
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(),
                          nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(5, 2)).double()
    initial = start_from(T, model, init)
    features = []
    model[4].register_forward_hook(lambda module, inputs, output: features.append(
        output.detach().cpu().numpy().copy()))
    criterion = nn.CrossEntropyLoss()
    optimizer = T.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = T.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    best_wts, best_acc, history = copy.deepcopy(model.state_dict()), 0.0, []
    device = default_device(T)
    for epoch in range(4):
        for phase in ["train", "val"]:
            model.train() if phase == "train" else model.eval()
            running_loss, running_corrects = 0.0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with T.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = T.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += T.sum(preds == labels.data)
            if phase == "train":
                scheduler.step()
            epoch_acc = running_corrects.double() / sizes[phase]
            history.append((running_loss / sizes[phase], epoch_acc.item()))
            if phase == "val" and epoch_acc > best_acc:
                best_acc, best_wts = epoch_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_wts)
    return {"init": initial, "history": history, "features": np.concatenate(features),
            "final": numpy_state(model)}


def test_finetune_loop_and_datasets():
    compare(finetune, 1e-9, 1e-11)


# --- 18. text classification (the AG_NEWS tutorial's model): EmbeddingBag with offsets -------

def text_classifier(T, init):
    nn = T.nn

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super().__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text, offsets):
            return self.fc(self.embedding(text, offsets))

    rng = np.random.default_rng(18)
    device = default_device(T)
    model = TextClassificationModel(20, 6, 3).double()
    initial = start_from(T, model, init)
    optimizer = T.optim.SGD(model.parameters(), lr=2.0)
    scheduler = T.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.5)
    criterion = nn.CrossEntropyLoss()
    losses = []
    for step in range(6):
        lengths = rng.integers(1, 7, 5)
        label = T.from_numpy(rng.integers(0, 3, 5)).to(device)
        text = T.from_numpy(rng.integers(0, 20, lengths.sum())).to(device)
        offsets = T.tensor([0] + list(lengths[:-1])).cumsum(dim=0).to(device)
        optimizer.zero_grad()
        loss = criterion(model(text, offsets), label)
        loss.backward()
        T.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "final": numpy_state(model)}


def test_text_classifier_embedding_bag():
    compare(text_classifier, 1e-9, 1e-11)


# --- 19. a hand-written optimizer, as blog posts write them: Optimizer subclass, state,
#         addcmul_/addcdiv_, @no_grad on step ------------------------------------------------

def custom_optimizer(T, init):
    nn = T.nn

    class MyAdam(T.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

        @T.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = T.zeros_like(p)
                        state["exp_avg_sq"] = T.zeros_like(p)
                    state["step"] += 1
                    state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state["exp_avg_sq"] / (1 - beta2 ** state["step"])).sqrt().add_(
                        group["eps"])
                    step_size = group["lr"] / (1 - beta1 ** state["step"])
                    p.addcdiv_(state["exp_avg"], denom, value=-step_size)

    model = nn.Sequential(nn.Linear(3, 6), nn.Softplus(), nn.Linear(6, 1)).double()
    initial = start_from(T, model, init)
    optimizer = MyAdam(model.parameters(), lr=0.02)
    reference = T.optim.Adam(nn.Linear(1, 1).parameters())    # for the class check
    rng = np.random.default_rng(19)
    device = default_device(T)
    losses = []
    for step in range(6):
        x = T.from_numpy(rng.standard_normal((8, 3))).to(device)
        loss = (model(x).squeeze(1) - x.prod(1)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert isinstance(reference, T.optim.Optimizer)
    return {"init": initial, "losses": losses, "final": numpy_state(model),
            "state_steps": [s["step"] for s in optimizer.state.values()]}


def test_custom_optimizer_subclass():
    compare(custom_optimizer, 1e-9, 1e-11)


# --- 20. the Annotated Transformer's pieces in float32: clones by deepcopy, a hand-written
#         attention masked with finfo.min, logical_and masks, count_nonzero accuracy ---------

def annotated_attention(T, init):
    import copy
    nn, F = T.nn, T.nn.functional
    vocab, d_model, heads, length = 10, 12, 3, 7

    def clones(module, n):
        return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])

    def attention(query, key, value, mask):
        scores = T.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
        scores = scores.masked_fill(T.logical_not(mask), T.finfo(scores.dtype).min)
        p_attn = scores.softmax(dim=-1)
        return T.matmul(p_attn, value), p_attn

    class MultiHeadedAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.d_k = d_model // heads
            self.linears = clones(nn.Linear(d_model, d_model), 4)

        def forward(self, x, mask):
            b = x.size(0)
            q, k, v = [lin(x).view(b, -1, heads, self.d_k).transpose(1, 2)
                       for lin in self.linears[:3]]
            out, self.attn = attention(q, k, v, mask.unsqueeze(1))
            out = out.transpose(1, 2).contiguous().view(b, -1, heads * self.d_k)
            return self.linears[-1](out)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = MultiHeadedAttention()
            self.ff = nn.Sequential(nn.Linear(d_model, 24), nn.ReLU(), nn.Linear(24, d_model))
            self.norms = clones(nn.LayerNorm(d_model), 2)

        def forward(self, x, mask):
            x = x + self.attn(self.norms[0](x), mask)
            return x + self.ff(self.norms[1](x))

    class TinyLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model, padding_idx=0)
            self.blocks = clones(Block(), 2)
            self.out = nn.Linear(d_model, vocab)

        def forward(self, tokens):
            causal = T.tril(T.ones(tokens.size(1), tokens.size(1), dtype=T.bool,
                                   device=tokens.device))
            mask = T.logical_and((tokens != 0).unsqueeze(1), causal)
            x = self.embed(tokens) * math.sqrt(d_model)
            for block in self.blocks:
                x = block(x, mask)
            return self.out(x)

    model = TinyLM()
    initial = start_from(T, model, init)
    optimizer = T.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    scheduler = T.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / 10)
    rng = np.random.default_rng(20)
    device = default_device(T)
    losses, accuracies = [], []
    for step in range(6):
        batch = rng.integers(1, vocab, (4, length + 1))
        batch[0, -3:] = 0                                   # padding at the end
        tokens = T.from_numpy(batch).to(device)
        logits = model(tokens[:, :-1])
        targets = tokens[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1), ignore_index=0)
        loss = loss + 1e-3 * T.pow(model.out.weight, 2).sum()
        assert T.all(T.isfinite(loss)) and not T.any(T.isinf(logits))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        real = targets != 0
        hits = T.logical_and(logits.argmax(-1) == targets, real)
        accuracies.append(T.count_nonzero(hits).item() / T.count_nonzero(real).item())
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "accuracy": accuracies,
            "attn": model.blocks[1].attn.attn.detach().cpu().numpy(),
            "final": numpy_state(model)}


def test_annotated_attention_float32():
    compare(annotated_attention, 2e-4, 2e-5, loose=[("linears.1.bias", 6 * 3e-3)])


# --- 21. pytorch/examples' word_language_model: tied weights, batchify, truncated BPTT with
#         repackage_hidden, a manual SGD update through p.data ------------------------------

def word_language_model(T, init, rnn_type="LSTM"):
    nn = T.nn
    ntoken, ninp, bptt = 13, 8, 4

    class RNNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.0)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.rnn = getattr(nn, rnn_type)(ninp, ninp, 2, dropout=0.0)
            self.decoder = nn.Linear(ninp, ntoken)
            self.decoder.weight = self.encoder.weight          # tie_weights

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            decoded = self.decoder(self.drop(output)).view(-1, ntoken)
            return T.nn.functional.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if rnn_type == "LSTM":
                return (weight.new_zeros(2, bsz, ninp), weight.new_zeros(2, bsz, ninp))
            return weight.new_zeros(2, bsz, ninp)

    def batchify(data, bsz):
        nbatch = data.size(0) // bsz
        data = data.narrow(0, 0, nbatch * bsz)
        return data.view(bsz, -1).t().contiguous()

    def repackage_hidden(h):
        if isinstance(h, T.Tensor):
            return h.detach()
        return tuple(repackage_hidden(v) for v in h)

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)

    corpus = T.from_numpy(np.random.default_rng(21).integers(0, ntoken, 75))
    train_data = batchify(corpus, 3).to(default_device(T))      # the example's batchify moves it
    model = RNNModel().double()
    assert model.decoder.weight is model.encoder.weight
    assert len(list(model.parameters())) == len(model.state_dict()) - 1   # the tied one once
    initial = start_from(T, model, init)
    criterion = nn.NLLLoss()
    lr, losses = 2.0, []
    for epoch in range(2):
        model.train()
        hidden = model.init_hidden(3)
        for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
            data, targets = get_batch(train_data, i)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            T.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
        lr /= 4.0
    return {"init": initial, "losses": losses, "final": numpy_state(model)}


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_word_language_model_tied_weights(rnn_type):
    compare(word_language_model, 1e-9, 1e-11, rnn_type=rnn_type)


# --- 22. the DCGAN tutorial: weights_init by class name, ConvTranspose2d generator, BCELoss,
#         gradients accumulated over two backward calls before one step --------------------

def dcgan(T, init):
    nn = T.nn
    nz, ngf, ndf = 4, 4, 4

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            nn.init.normal_(m.weight.data, 0.0, 0.02)
        elif classname.find("BatchNorm") != -1:
            nn.init.normal_(m.weight.data, 1.0, 0.02)
            nn.init.constant_(m.bias.data, 0)

    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1, bias=False), nn.Tanh()).double()
    netD = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, 1, 2, 1, 0, bias=False), nn.Sigmoid()).double()
    netG.apply(weights_init)
    netD.apply(weights_init)
    initial = {"G": start_from(T, netG, None if init is None else init["G"]),
               "D": start_from(T, netD, None if init is None else init["D"])}
    criterion = nn.BCELoss()
    optimizerD = T.optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
    optimizerG = T.optim.Adam(netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
    rng = np.random.default_rng(22)
    device = default_device(T)
    history = []
    for i in range(5):
        real_cpu = T.from_numpy(np.tanh(rng.standard_normal((6, 1, 8, 8)))).to(device)
        b_size = real_cpu.size(0)
        netD.zero_grad()
        label = T.full((b_size,), 1.0, dtype=T.float64, device=device)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = T.from_numpy(rng.standard_normal((b_size, nz, 1, 1))).to(device)
        fake = netG(noise)
        label.fill_(0.0)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        netG.zero_grad()
        label.fill_(1.0)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        history.append((errD.item(), errG.item(), D_x))
    return {"init": initial, "history": history, "G": numpy_state(netG), "D": numpy_state(netD)}


def test_dcgan_tutorial_step():
    compare(dcgan, 1e-9, 1e-11)


# --- 23. Grad-CAM as blog posts write it: a forward hook keeps the activations, a full backward
#         hook their gradients; another backward hook rescales a layer's input gradient --------

def grad_cam(T, init):
    nn, F = T.nn, T.nn.functional
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 3)).double()
    initial = start_from(T, model, init)
    saved, seen = {}, []
    target_layer = model[2]
    target_layer.register_forward_hook(lambda m, inp, out: saved.update(activations=out))
    target_layer.register_full_backward_hook(
        lambda m, grad_in, grad_out: saved.update(gradients=grad_out[0]))
    model[6].register_full_backward_hook(lambda m, grad_in, grad_out: (grad_in[0] * 0.5,))
    first = model[0].register_full_backward_hook(
        lambda m, grad_in, grad_out: seen.append((grad_in[0] is None,
                                                  grad_out[0].abs().sum().item())))
    image = T.from_numpy(np.random.default_rng(23).standard_normal((2, 2, 6, 6))).to(
        default_device(T))
    cams, grads = [], []
    for step in range(2):
        model.zero_grad()
        scores = model(image)
        scores[:, scores[0].argmax()].sum().backward()
        weights = saved["gradients"].mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * saved["activations"]).sum(dim=1))
        cam = cam / (cam.amax(dim=(1, 2), keepdim=True) + 1e-8)
        cams.append(cam.detach().cpu().numpy())
        grads.append(model[0].weight.grad.cpu().numpy().copy())
        first.remove()
    return {"init": initial, "cams": cams, "grads": grads, "seen": seen}


def test_grad_cam_backward_hooks():
    theirs, ours = compare(grad_cam, 1e-10, 1e-12)
    assert len(ours["seen"]) == 1 and ours["seen"][0][0]


# --- 24. pytorch/examples' REINFORCE: Categorical policy, log_prob, normalised returns;
#         a Normal policy's rsample/log_prob/entropy and kl_divergence beside it ------------

def reinforce(T, init):
    nn, F = T.nn, T.nn.functional
    from_dist = T.distributions

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 16)
            self.affine2 = nn.Linear(16, 2)
            self.saved_log_probs, self.rewards = [], []

        def forward(self, x):
            return F.softmax(self.affine2(F.relu(self.affine1(x))), dim=1)

    policy = Policy().double()
    initial = start_from(T, policy, init)
    optimizer = T.optim.Adam(policy.parameters(), lr=1e-2)
    eps = np.finfo(np.float32).eps.item()
    rng = np.random.default_rng(24)
    device = default_device(T)
    losses, entropies = [], []
    for episode in range(4):
        state = rng.standard_normal(4)
        for t in range(6):                                     # a toy environment
            probs = policy(T.from_numpy(state).unsqueeze(0).to(device))
            m = from_dist.Categorical(probs)
            # the action from NumPy (same on both) where the tutorial calls m.sample()
            p = probs.detach().cpu().numpy()[0]
            action = T.tensor([int(rng.choice(2, p=p / p.sum()))], device=device)
            policy.saved_log_probs.append(m.log_prob(action))
            entropies.append(m.entropy().item())
            policy.rewards.append(float(state[int(action.item())] > 0))
            state = np.roll(state, 1) + 0.1 * rng.standard_normal(4)
        R, returns = 0, []
        for r in policy.rewards[::-1]:
            R = r + 0.99 * R
            returns.insert(0, R)
        returns = T.tensor(returns, dtype=T.float64, device=device)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        policy_loss = [-log_prob * R for log_prob, R in zip(policy.saved_log_probs, returns)]
        optimizer.zero_grad()
        policy_loss = T.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        del policy.rewards[:], policy.saved_log_probs[:]
        losses.append(policy_loss.item())
    mu = T.tensor([0.3, -1.2], dtype=T.float64, requires_grad=True)
    normal = from_dist.Normal(mu, T.tensor([0.5, 2.0], dtype=T.float64))
    value = T.tensor([0.1, 0.4], dtype=T.float64)
    (normal.log_prob(value).sum() + normal.entropy().sum()
     + from_dist.kl_divergence(normal, from_dist.Normal(0.0, 1.0)).sum()).backward()
    draws = from_dist.Categorical(probs=T.tensor([0.2, 0.5, 0.3])).sample((4000,))
    frequencies = [(draws == k).double().mean().item() for k in range(3)]
    return {"init": initial, "losses": losses, "entropies": entropies,
            "normal_grad": mu.grad.cpu().numpy(), "final": numpy_state(policy),
            "frequencies_ok": max(abs(f - p) for f, p in zip(frequencies, [0.2, 0.5, 0.3])) < 0.04}


def test_reinforce_distributions():
    theirs, ours = compare(reinforce, 1e-9, 1e-11)
    assert ours["frequencies_ok"]


# --- 25. cells in a Python loop: a bidirectional packed LSTM encoder, an LSTMCell decoder with
#         input feeding, a GRUCell/RNNCell side path; Rprop on a full batch ----------------------

def cell_decoder(T, init):
    nn, F = T.nn, T.nn.functional
    rnn_utils = nn.utils.rnn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.LSTM(3, 4, batch_first=True, bidirectional=True, num_layers=2)
            self.bridge = nn.Linear(8, 5)
            self.cell = nn.LSTMCell(5 + 2, 5)
            self.gru_cell = nn.GRUCell(5, 3)
            self.rnn_cell = nn.RNNCell(3, 3, nonlinearity="relu")
            self.out = nn.Linear(5 + 3, 2)

        def forward(self, x, lengths, steps):
            packed = rnn_utils.pack_padded_sequence(x, lengths, batch_first=True,
                                                    enforce_sorted=False)
            _, (h, c) = self.encoder(packed)
            h0 = T.tanh(self.bridge(T.cat([h[-2], h[-1]], dim=1)))
            state = (h0, T.zeros_like(h0))
            side = T.zeros(x.size(0), 3, dtype=x.dtype, device=x.device)
            prev, outputs = T.zeros(x.size(0), 2, dtype=x.dtype, device=x.device), []
            for _ in range(steps):
                state = self.cell(T.cat([state[0], prev], dim=1), state)
                side = self.rnn_cell(self.gru_cell(state[0], side), side)
                prev = self.out(T.cat([state[0], side], dim=1))
                outputs.append(prev)
            return T.stack(outputs, dim=1)

    model = Model().double()
    initial = start_from(T, model, init)
    optimizer = T.optim.Rprop(model.parameters(), lr=0.01, etas=(0.4, 1.3),
                              step_sizes=(1e-5, 0.5))
    rng = np.random.default_rng(25)
    device = default_device(T)
    x = T.from_numpy(rng.standard_normal((5, 6, 3))).to(device)
    lengths = T.tensor([6, 2, 4, 5, 1], device="cpu")       # pack_padded_sequence's: cpu only
    target = T.from_numpy(rng.standard_normal((5, 4, 2))).to(device)
    losses = []
    for step in range(5):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x, lengths, 4), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"init": initial, "losses": losses, "final": numpy_state(model)}


def test_cell_decoder_packed_encoder_rprop():
    compare(cell_decoder, 1e-9, 1e-11)


# --- 26. training-loop idioms of larger codebases: no-decay parameter groups by name, a tied
#         autoencoder through F.linear(x, W.t()), an L1 activity penalty, an EMA copy of the
#         weights, vector_to_parameters ---------------------------------------------------------

def training_idioms(T, init):
    import copy
    nn, F = T.nn, T.nn.functional

    class TiedAutoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.W = nn.Parameter(T.zeros(4, 6, dtype=T.float64))
            self.b_enc = nn.Parameter(T.zeros(4, dtype=T.float64))
            self.b_dec = nn.Parameter(T.zeros(6, dtype=T.float64))
            self.norm = nn.LayerNorm(4).double()

        def forward(self, x):
            code = F.relu(self.norm(F.linear(x, self.W, self.b_enc)))
            return F.linear(code, self.W.t(), self.b_dec), code

    model = TiedAutoencoder()
    nn.init.orthogonal_(model.W)
    initial = start_from(T, model, init)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.startswith("b_") or "norm" in name else decay).append(p)
    optimizer = T.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                               {"params": no_decay, "weight_decay": 0.0}], lr=5e-3)
    scheduler = T.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=6, power=2.0)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(26)
    device = default_device(T)
    losses = []
    for step in range(6):
        x = T.from_numpy(rng.standard_normal((7, 6))).to(device)
        recon, code = model(x)
        loss = F.mse_loss(recon, x) + 1e-2 * code.abs().sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        with T.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.mul_(0.8).add_(p, alpha=0.2)
        losses.append(loss.item())
    flat = nn.utils.parameters_to_vector(ema.parameters())
    probe = copy.deepcopy(model)
    nn.utils.vector_to_parameters(flat * 2, probe.parameters())
    return {"init": initial, "losses": losses, "final": numpy_state(model),
            "ema": numpy_state(ema), "probe": numpy_state(probe),
            "lr": scheduler.get_last_lr()}


def test_training_idioms_groups_tied_ema():
    compare(training_idioms, 1e-9, 1e-11)
