"""An LSTM encoder-decoder with attention over the encoder states (Luong-style, global)."""

import math

from .. import nn
from ..autograd import no_grad
from ..creation import full
from ..dtypes import int64
from ..functions import cat
from .mlp import check_positive


class DotAttention(nn.Module):
    """Scaled dot-product scores ``q . k / sqrt(H)`` between decoder and encoder states."""

    def forward(self, query, keys):
        # query (N, Tq, H), keys (N, Tk, H) -> scores (N, Tq, Tk)
        return (query @ keys.transpose(1, 2)) * (1.0 / math.sqrt(query.shape[-1]))


class AdditiveAttention(nn.Module):
    """Bahdanau's additive scores ``v . tanh(W q + U k)``."""

    def __init__(self, hidden_size, attention_size=None):
        super().__init__()
        attention_size = attention_size or hidden_size
        self.query_proj = nn.Linear(hidden_size, attention_size, bias=False)
        self.key_proj = nn.Linear(hidden_size, attention_size)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def forward(self, query, keys):
        q = self.query_proj(query).unsqueeze(2)                    # (N, Tq, 1, A)
        k = self.key_proj(keys).unsqueeze(1)                       # (N, 1, Tk, A)
        return self.v((q + k).tanh()).squeeze(-1)                  # (N, Tq, Tk)


class Seq2SeqAttention(nn.Module):
    """Sequence-to-sequence model: LSTM encoder, LSTM decoder, attention over encoder states.

    Each decoder output ``h_t`` attends over all encoder outputs; the context vector ``c_t`` and
    ``h_t`` give the prediction ``out(tanh(W [h_t; c_t]))`` (Luong et al., 2015). The decoder
    starts from the encoder's final state. Training uses teacher forcing: ``forward(src,
    tgt_in)`` feeds the true previous tokens (the target shifted right, starting with BOS), so
    the whole target runs through the decoder LSTM at once. ``greedy_decode`` feeds back its own
    predictions one step at a time.

    Args:
        src_vocab, tgt_vocab: vocabulary sizes of the source and target tokens.
        embed_dim, hidden_size, num_layers: embedding size and the LSTMs' width and depth.
        attention: 'dot' (scaled dot product) or 'additive' (Bahdanau).
        pad_idx: source token id that attention ignores (None: attend everywhere).
        dropout: dropout on the embeddings and before the output layer.

    Shape: src (N, S) int64, tgt_in (N, T) int64 -> logits (N, T, tgt_vocab).
    """

    def __init__(self, src_vocab, tgt_vocab, embed_dim=32, hidden_size=64, num_layers=1,
                 attention="dot", pad_idx=None, dropout=0.0):
        super().__init__()
        check_positive("Seq2SeqAttention", src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                       embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers)
        if attention not in ("dot", "additive"):
            raise ValueError(f"Seq2SeqAttention: attention must be 'dot' or 'additive', got "
                             f"{attention!r}")
        self.pad_idx = pad_idx
        self.src_embedding = nn.Embedding(src_vocab, embed_dim, padding_idx=pad_idx)
        self.tgt_embedding = nn.Embedding(tgt_vocab, embed_dim)
        self.encoder = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True)
        self.decoder = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True)
        self.attention = DotAttention() if attention == "dot" else AdditiveAttention(hidden_size)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, tgt_vocab)

    def encode(self, src):
        """(encoder outputs (N, S, H), final (h, c) state, padding mask (N, 1, S) or None)."""
        outputs, state = self.encoder(self.dropout(self.src_embedding(src)))
        mask = None if self.pad_idx is None else (src == self.pad_idx).unsqueeze(1)
        return outputs, state, mask

    def decode(self, tgt_in, memory, state, mask=None):
        """Run the decoder over ``tgt_in`` (N, T) from ``state``.

        Returns (logits (N, T, tgt_vocab), new state, attention weights (N, T, S)).
        """
        h, state = self.decoder(self.dropout(self.tgt_embedding(tgt_in)), state)   # (N, T, H)
        scores = self.attention(h, memory)                         # (N, T, S)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = scores.softmax(-1)
        context = weights @ memory                                 # (N, T, H)
        attended = self.combine(cat([h, context], dim=-1)).tanh()
        return self.out(self.dropout(attended)), state, weights

    def forward(self, src, tgt_in):
        memory, state, mask = self.encode(src)
        return self.decode(tgt_in, memory, state, mask)[0]

    def greedy_decode(self, src, max_len, bos, eos=None):
        """Translate ``src`` (N, S) by feeding back the most likely token, starting from ``bos``.

        Stops after ``max_len`` tokens, or earlier once every sequence has produced ``eos``.
        Returns the generated tokens (N, <= max_len) int64, without the BOS.
        """
        check_positive("greedy_decode", max_len=max_len)
        was_training = self.training
        self.eval()
        with no_grad():
            memory, state, mask = self.encode(src)
            token = full((src.shape[0], 1), bos, dtype=int64, device=src.device)
            tokens, finished = [], None
            for _ in range(max_len):
                logits, state, _ = self.decode(token, memory, state, mask)
                token = logits.argmax(-1)                          # (N, 1)
                tokens.append(token)
                if eos is not None:
                    done = (token == eos)
                    finished = done if finished is None else (finished | done)
                    if bool(finished.all()):
                        break
        self.train(was_training)
        return cat(tokens, dim=1)
