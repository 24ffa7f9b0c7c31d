"""The generative retriever: a T5-style encoder-decoder (torch.nn.Transformer, pre-norm) that reads
a user's history as semantic-ID tokens and generates the next item's 4 codes.

Token layout (one shared embedding table, tied to the output layer as in T5): level l's code c is
token l * K + c (K = codebook size; levels 0-2 hold K codes, level 3, the collision token, holds C,
the tokenizer's collision range, sized from the data: models/generative/semantic_ids.py), then
PAD, BOS (the decoder's start) and CLS (a token every encoder input starts with, so an empty
history still has something to attend to): 3K + C + 3 tokens.

Encoder input, `item_tokens`:
- "flat" (TIGER): every history item contributes its 4 code tokens, plus an item-position and
  a level embedding: 4L + 1 tokens.
- "sum": one token per item, the sum of its 4 code embeddings plus its position: L + 1 tokens,
  16x less attention and 4x less feed-forward work for the same history; the default because
  it trains in a fraction of the time on CPU (benchmarks/bench_generative.py compares both).

The encoder is causal by default (`encoder`): a position reads CLS and the items up to its own,
as in SASRec, so one pass over a window of a user's positives serves every position's target
(`forward_windows`, what training runs); serving decodes from the last position, which reads
the whole history. "bidirectional" (every position reads every item) is what checkpoints from
before the setting were trained with; it trains one encoder pass per row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.settings import setting

ITEM_TOKENS = ("sum", "flat")
ENCODERS = ("causal", "bidirectional")


@dataclass
class Seq2SeqConfig:
    codebook_size: int = 256  # K: codes per level (the tokenizer's)
    collision_size: int = 0  # C: the collision token's range (the tokenizer's); 0 = K, as saved before it was sized
    history_len: int = setting(
        20,
        "Last positives the encoder reads; a training window holds history_len + 1 of them, so "
        "a step costs more with it (50 took 1.9x the CPU of 20 a step on MovieLens).",
    )
    d_model: int = setting(64, "Transformer width (TIGER's 128 with 4+4 layers took 5.3x the CPU a step on MovieLens).")
    heads: int = setting(4, "Attention heads.")
    encoder_layers: int = setting(2, "Encoder layers (TIGER 4, ETEGRec 6; 2 within the graph's budget).")
    decoder_layers: int = setting(2, "Decoder layers (4 codes to generate: a short decoder).")
    ffn: int = setting(256, "Feed-forward width (4 x d_model).")
    dropout: float = setting(
        0.0,
        "Dropout in the transformer: 0.1 was 21% of a training step's CPU (38% at history 50) "
        "and did not pay within the work budget (README, generative section).",
    )
    item_tokens: str = setting(
        "sum",
        "sum (one encoder token per history item, the "
        "sum of its code embeddings) or flat (TIGER: 4 tokens per item, 4x the sequence).",
    )

    encoder: str = setting(
        "causal",
        "causal (a history position reads the items before it only, as in SASRec: training "
        "encodes a window of a user's positives once and learns every position's next item from "
        "it, models/generative/training.py) or bidirectional (every position reads the whole "
        "history: each training row is encoded on its own; checkpoints from before this setting).",
    )

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.item_tokens not in ITEM_TOKENS:
            raise ValueError(f"item_tokens must be one of {ITEM_TOKENS}, got {self.item_tokens!r}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        if self.collision_size < 0:
            raise ValueError(f"collision_size must be >= 0 (0 = codebook_size), got {self.collision_size}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def level_sizes(self) -> tuple[int, int, int, int]:
        """Codes per level: (K, K, K, C); the trie and beam search take them from here."""
        K = self.codebook_size
        return (K, K, K, self.collision_size or K)

    @property
    def pad(self) -> int:
        return sum(self.level_sizes)

    @property
    def bos(self) -> int:
        return self.pad + 1

    @property
    def cls(self) -> int:
        return self.pad + 2


class GenerativeRetriever(nn.Module):
    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.cfg = cfg
        K, D = cfg.codebook_size, cfg.d_model
        self.tokens = nn.Embedding(cfg.pad + 3, D, padding_idx=cfg.pad)  # 3K + C codes, PAD, BOS, CLS
        self.item_pos = nn.Embedding(cfg.history_len + 1, D)  # 0 = CLS, 1..L history positions
        self.level = nn.Embedding(4, D)
        self.dec_pos = nn.Embedding(4, D)
        layer = nn.TransformerEncoderLayer(D, cfg.heads, cfg.ffn, cfg.dropout, batch_first=True, norm_first=True)
        # nested tensors do not apply to pre-norm layers; saying so keeps torch from warning
        encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, nn.LayerNorm(D), enable_nested_tensor=False)
        self.transformer = nn.Transformer(
            D,
            cfg.heads,
            cfg.encoder_layers,
            cfg.decoder_layers,
            cfg.ffn,
            cfg.dropout,
            batch_first=True,
            norm_first=True,
            custom_encoder=encoder,
        )
        for emb in (self.tokens, self.item_pos, self.level, self.dec_pos):  # one scale: positions must not drown codes
            nn.init.normal_(emb.weight, std=0.02)
        self.register_buffer("offsets", torch.arange(4) * K, persistent=False)  # (4,) level l starts at l * K
        sizes = torch.tensor(cfg.level_sizes)
        # (4, V) True where a level has no such code (V = the widest level): those logits are -inf
        self.register_buffer("no_code", torch.arange(max(cfg.level_sizes))[None] >= sizes[:, None], persistent=False)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(4), persistent=False)

    def code_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., 4) codes, -1 = padding item -> (..., 4) token ids."""
        return torch.where(codes >= 0, codes + self.offsets, torch.full_like(codes, self.cfg.pad))

    def item_of_position(self) -> torch.Tensor:
        """(S,) the history item each encoder position belongs to: 0 for CLS, 1..L for the items
        (each item's 4 positions in "flat")."""
        items = torch.arange(1, self.cfg.history_len + 1, device=self.offsets.device)
        if self.cfg.item_tokens == "flat":
            items = items.repeat_interleave(4)
        return torch.cat([items.new_zeros(1), items])

    def encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, 4) history codes (left-padded items are all -1) -> memory (B, S, D) and its
        key padding mask (B, S), True = ignore. The causal encoder lets a position read CLS and
        the items up to its own only."""
        B, L, four = hist.shape
        assert four == 4 and L == self.cfg.history_len, hist.shape
        pos = torch.arange(1, L + 1, device=hist.device)
        tok = self.tokens(self.code_tokens(hist))  # (B, L, 4, D)
        pad = hist[..., 0] < 0  # (B, L)
        if self.cfg.item_tokens == "sum":
            x = tok.sum(2) + self.item_pos(pos)[None]  # (B, L, D)
            mask = pad
        else:
            x = (tok + self.item_pos(pos)[None, :, None] + self.level.weight[None, None]).reshape(
                B, 4 * L, -1
            )  # (B, 4L, D)
            mask = pad[:, :, None].expand(B, L, 4).reshape(B, 4 * L)
        cls = (self.tokens.weight[self.cfg.cls] + self.item_pos.weight[0]).expand(B, 1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], 1)  # (B, S, D)
        mask = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=hist.device), mask], 1)  # (B, S)
        item = self.item_of_position()
        later = item[None, :] > item[:, None] if self.cfg.encoder == "causal" else None  # (S, S) True = hidden
        return self.transformer.encoder(x, mask=later, src_key_padding_mask=mask), mask

    def decode(self, prefix: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
        """(M, t) code prefix (t in 0..3) -> (M, t + 1, D) decoder states; state i predicts code i."""
        M, t = prefix.shape
        toks = torch.cat(
            [torch.full((M, 1), self.cfg.bos, device=prefix.device), prefix + self.offsets[:t]], 1
        )  # (M, t + 1)
        y = self.tokens(toks) + self.dec_pos.weight[: t + 1][None]  # (M, t + 1, D)
        return self.transformer.decoder(
            y, memory, tgt_mask=self.causal[: t + 1, : t + 1], tgt_is_causal=True, memory_key_padding_mask=memory_mask
        )

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """(M, D) states -> (M, K) logits over level `level`'s codes ((M, C) for the collision
        token; tied output embedding)."""
        start = level * self.cfg.codebook_size
        return h @ self.tokens.weight[start : start + self.cfg.level_sizes[level]].T

    def output_weights(self) -> torch.Tensor:
        """(4, V, D) each level's code embeddings, zero rows past the level's size (V = the widest level)."""
        V = self.no_code.shape[1]
        w = self.tokens.weight
        return torch.stack(
            [
                nn.functional.pad(w[start : start + n], (0, 0, 0, V - n))  # (V, D)
                for start, n in zip(self.offsets.tolist(), self.cfg.level_sizes)
            ]
        )

    def code_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(M, 4, D) decoder states, state i predicting code i -> (M, 4, V) logits over each
        level's codes (tied output embedding; -inf past a level's own size)."""
        logits = torch.einsum("bld,lvd->blv", h, self.output_weights())
        if self.no_code.any():  # C != K: the narrower levels' extra columns are no codes
            logits = logits.masked_fill(self.no_code, -torch.inf)
        return logits

    def forward(self, hist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, L, 4) histories, (B, 4) target codes -> (B, 4, V) logits (V =
        the widest level; -inf past a level's own size)."""
        return self.forward_states(hist, target)[0]

    def forward_windows(self, hist: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing over windows with the causal encoder: (B, L, 4) the codes of each
        window's first L items, (B, L, 4) the codes of the item after each (all -1: not a target)
        -> (M, 4, V) logits (-inf past a level's size) and (M, 4) codes of the M targets.

        One encoder pass and one decoder pass a window: the decoder reads the targets' 4 tokens
        (from the first position any window marks) as one sequence in which a target's tokens see
        each other causally and no other target's, and the memory up to the target's last history
        item, so each target gets what `decode` gives a history ending at that item (the memory's
        keys and values computed once for all)."""
        if self.cfg.encoder != "causal":
            raise ValueError(
                "forward_windows needs the causal encoder: a bidirectional one lets a position read its target"
            )
        memory, mask = self.encode(hist)  # (B, S, D), (B, S)
        B, L, four = target.shape
        assert four == 4 and L == self.cfg.history_len, target.shape
        marked = target[..., 0] >= 0  # (B, L)
        w, j = torch.nonzero(marked, as_tuple=True)  # (M,) window and position of each target
        # decode from the first position any window marks: overlapping windows mark only their
        # last `stride`, so the decoder's work follows the targets, not the window
        j0 = int(j.min()) if len(j) else 0
        T = L - j0  # positions decoded
        bos = torch.full((B, T, 1), self.cfg.bos, device=target.device)
        toks = torch.cat([bos, target[:, j0:, :3].clamp_min(0) + self.offsets[:3]], -1).reshape(B, 4 * T)
        y = self.tokens(toks) + self.dec_pos.weight.repeat(T, 1)[None]  # (B, 4T, D)
        group = torch.arange(j0, L, device=target.device).repeat_interleave(4)  # (4T,) the target a token decodes
        level = torch.arange(4, device=target.device).repeat(T)  # (4T,)
        hidden = (group[:, None] != group[None]) | (level[None] > level[:, None])  # (4T, 4T) True = hidden
        unread = self.item_of_position()[None] > group[:, None] + 1  # (4T, S): CLS and items 0..j are read
        h = self.transformer.decoder(y, memory, tgt_mask=hidden, memory_mask=unread, memory_key_padding_mask=mask)
        h = h.reshape(B, T, 4, -1)[w, j - j0]  # (M, 4, D)
        return self.code_logits(h), target[w, j]

    def forward_states(
        self, hist: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing with the states ETEGRec's alignment losses read: (B, 4, V) logits (-inf
        past a level's size), (B, D) the encoder's mean state over the non-padding positions (CLS
        included), and (B, D) the decoder's first state (the one that predicts c1)."""
        memory, mask = self.encode(hist)
        h = self.decode(target[:, :3], memory, mask)  # (B, 4, D)
        logits = self.code_logits(h)  # (B, 4, V)
        keep = (~mask).unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
        seq = (memory * keep).sum(1) / keep.sum(1)  # (B, D)
        return logits, seq, h[:, 0]  # (B, 4, V), (B, D), (B, D)
