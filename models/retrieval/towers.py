"""User and item towers: small nn.Modules over hashed ids and content features.

Item tower: Phoenix-style hashed id embedding (n_hashes hash functions into one shared table,
bucket 0 = padding; the per-hash vectors are concatenated and projected) + category bag +
title-token bag + numeric features -> MLP -> L2-normalised vector. ID dropout in training
zeroes the id part of some items so that content alone learns to embed a brand-new item, and
an item whose id was never trained (all-zero `id_hash`: the catalog's rule, see
models.retrieval.data.Catalog.build) takes exactly that path: its id part is zero, never a
hash bucket trained for other items.

User tower: hashed user id + an encoder over the last L positive items, whose inputs are the
item tower's own representations (TwoTower.history: the tables are shared) -> MLP ->
L2-normalised vector in the item space. Encoders: `mean` (masked mean; with `recency`, a learned
weight per position), `attention` (multi-head attention pooling with the user as query; with
`recency`, a learned position vector per slot), `transformer` (causal, SASRec-style; trained on
every position).

Every sequence starts with a user token, so no attention row is ever fully masked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.settings import setting

ENCODERS = ("mean", "attention", "transformer")

WIDE_UP_TO_ITEMS = 100_000  # catalogs up to this size get 128-wide towers (width_for)


def width_for(n_items: int) -> int:
    """The one rule for the towers' width (dim and hidden) when the config leaves it 0: 128 up to
    WIDE_UP_TO_ITEMS items, 64 beyond. On MovieLens (9k items, 3 seeds on each of two trainers)
    128 beat 64 on valid NDCG@10 in 6 of 6 seed pairs and on test by +0.008 on the mean (1.54x
    -> 1.76x EASE), at about 1.4x a step and 1.4x the epochs; at 1M items a 128-wide step costs
    2.0x and the index doubles, and the 10M-event graph already misses its time, so large
    catalogs keep 64. Widths between the two sizes were not measured for quality."""
    return 128 if n_items <= WIDE_UP_TO_ITEMS else 64


@dataclass
class TowerConfig:
    dim: int = setting(
        0,
        "Output vector size of both towers (the index dimension); 0 = by the catalog's size "
        "(width_for: 128 up to 100,000 items, 64 beyond). On MovieLens (9k items) 128 scored test "
        "NDCG@10 0.070 against 64's 0.061 over 3 seeds, valid higher in 6 of 6 seed pairs; at 1M "
        "items a 128-wide step costs 2x (README, 'Wider towers').",
        ge=0,
    )
    hidden: int = setting(0, "Internal width of the towers; 0 = by the catalog's size, as dim.", ge=0)
    id_dim: int = 32  # per-hash id vector size; n_hashes of them are concatenated
    n_hashes: int = 2  # hash functions per id (Phoenix uses 2): collisions rarely coincide
    item_buckets: int = 20_011  # shared item-id hash table rows (bucket 0 = padding)
    user_buckets: int = 20_011  # shared user-id hash table rows
    n_categories: int = 1  # category vocabulary size (padding + buckets + known)
    n_tokens: int = 1  # title-token vocabulary size
    n_numeric: int = 2  # numeric item features (year, has_year)
    encoder: str = setting(
        "mean",
        "User encoder over the last positives: mean, "
        "attention (multi-head pooling) or transformer (causal, SASRec-style, every position).",
    )
    history_len: int = setting(20, "How many recent positives the user tower reads.")
    heads: int = 2  # attention heads (attention, transformer)
    layers: int = 1  # transformer layers
    dropout: float = 0.1
    id_dropout: float = setting(
        0.1, "Share of items trained without their id, so content alone embeds a brand-new item."
    )
    use_content: bool = setting(True, "Categories, title tokens and year in the item tower.")
    sparse: bool = True  # sparse gradients for the id tables (SparseAdam: cheap steps at 1M items)
    recency: bool = setting(
        True,
        "mean/attention: learn a weight (mean) or vector "
        "(attention) per history position, so recent items can count more (MovieLens, "
        "mean encoder, 3 seeds: test NDCG@10 0.052 -> 0.068). Checkpoints written before it "
        "load with it off.",
    )

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.hidden and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")

    def to_dict(self) -> dict:
        return asdict(self)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (..., K, H), mask: (..., K) True = real -> (..., H); all-padding rows give 0."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(-2) / m.sum(-2).clamp(min=1.0)


class HashedIdEmbedding(nn.Module):
    """n_hashes lookups into one shared table, concatenated and projected."""

    def __init__(self, buckets: int, id_dim: int, n_hashes: int, out: int, sparse: bool):
        super().__init__()
        self.table = nn.Embedding(buckets, id_dim, padding_idx=0, sparse=sparse)
        nn.init.normal_(self.table.weight, std=0.05)
        with torch.no_grad():
            self.table.weight[0].zero_()
        self.proj = nn.Linear(n_hashes * id_dim, out)

    def forward(self, hashes: torch.Tensor) -> torch.Tensor:
        # hashes: (..., n_hashes) -> (..., n_hashes, id_dim) -> (..., n_hashes * id_dim) -> (..., out)
        e = self.table(hashes)
        return self.proj(e.flatten(-2))


class ItemTower(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.ids = HashedIdEmbedding(cfg.item_buckets, cfg.id_dim, cfg.n_hashes, h, cfg.sparse)
        self.categories = nn.Embedding(cfg.n_categories, h, padding_idx=0)
        self.tokens = nn.Embedding(cfg.n_tokens, h, padding_idx=0)
        self.numeric = nn.Linear(cfg.n_numeric, h)
        self.norm = nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * h, cfg.dim))

    def represent(
        self, feats: dict[str, torch.Tensor], id_dropout: bool = False, with_id: bool | torch.Tensor = True
    ) -> torch.Tensor:
        """Item features -> (..., hidden) representation (shared with the user tower's history).

        The id part is zero for an item without a trained id (all-zero `id_hash`), with
        `with_id=False` (the content-only vector; a (...,) bool tensor says it per item) and, in
        training, for the id-dropout share."""
        has_id = (feats["id_hash"] > 0).any(-1, keepdim=True)  # (..., 1): False = never trained
        if isinstance(with_id, torch.Tensor):
            with_id = with_id.unsqueeze(-1)  # (..., 1)
        idp = self.ids(feats["id_hash"]) * (has_id & with_id)  # (..., h)
        if id_dropout and self.training and self.cfg.id_dropout > 0:
            keep = torch.rand(idp.shape[:-1], device=idp.device) >= self.cfg.id_dropout
            idp = idp * keep.unsqueeze(-1)
        x = idp
        if self.cfg.use_content:
            x = x + self._bag(self.categories, feats["categories"]) + self._bag(self.tokens, feats["tokens"])
            x = x + self.numeric(feats["numeric"])
        return self.norm(x)

    @staticmethod
    def _bag(table: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
        """Mean of the non-padding rows: (..., K) -> (..., h); an all-padding bag gives 0."""
        flat = idx.reshape(-1, idx.shape[-1])  # (M, K)
        out = F.embedding_bag(flat, table.weight, mode="mean", padding_idx=0)  # (M, h)
        return out.view(*idx.shape[:-1], -1)

    def forward(self, feats: dict[str, torch.Tensor], with_id: bool | torch.Tensor = True) -> torch.Tensor:
        """(..., feature dims) -> (..., dim), unit length; `with_id=False`: by content alone (a
        (...,) bool tensor: per item, so one pass can hold both kinds of vector)."""
        id_dropout = with_id if isinstance(with_id, bool) else True  # content-only rows have no id part to drop
        return F.normalize(self.mlp(self.represent(feats, id_dropout=id_dropout, with_id=with_id)), dim=-1)


class UserTower(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        h, L = cfg.hidden, cfg.history_len
        self.ids = HashedIdEmbedding(cfg.user_buckets, cfg.id_dim, cfg.n_hashes, h, cfg.sparse)
        if cfg.encoder == "mean" and cfg.recency:
            self.position_logit = nn.Parameter(torch.zeros(L))  # 0 = plain mean at the start
        if cfg.encoder == "attention" and cfg.recency:
            self.position = nn.Parameter(torch.zeros(L, h))  # added to each history slot (latest last)
        if cfg.encoder == "attention":
            self.attn = nn.MultiheadAttention(h, cfg.heads, dropout=cfg.dropout, batch_first=True)
        elif cfg.encoder == "transformer":
            self.pos = nn.Embedding(L + 1, h)
            layer = nn.TransformerEncoderLayer(
                h, cfg.heads, 2 * h, cfg.dropout, batch_first=True, norm_first=True, activation="gelu"
            )
            self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(h)
        self.mlp = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * h, cfg.dim))

    def forward(
        self, user_hash: torch.Tensor, items: torch.Tensor, hist_mask: torch.Tensor, all_positions: bool = False
    ) -> torch.Tensor:
        """user_hash (B, n_hashes), history representations (B, L, hidden) from
        TwoTower.history, hist_mask (B, L) True = real.

        Histories are left-padded (latest item last). Returns (B, dim), or with all_positions
        (transformer only) (B, L, dim): the state after each history position.
        """
        B, L = hist_mask.shape
        assert items.shape[:2] == (B, L), (items.shape, hist_mask.shape)
        u = self.ids(user_hash)  # (B, h)
        if self.cfg.encoder == "mean" and self.cfg.recency:
            w = torch.exp(self.position_logit) * hist_mask  # (B, L): left padding keeps the latest item last
            pooled = (items * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp(min=1e-9)  # (B, h)
        elif self.cfg.encoder == "mean":
            pooled = _masked_mean(items, hist_mask)  # (B, h)
        elif self.cfg.encoder == "attention":
            if self.cfg.recency:
                items = items + self.position * hist_mask.unsqueeze(-1)
            seq = torch.cat([u.unsqueeze(1), items], dim=1)  # (B, 1 + L, h): the user token is always there
            pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=u.device), ~hist_mask], dim=1)
            pooled, _ = self.attn(u.unsqueeze(1), seq, seq, key_padding_mask=pad, need_weights=False)
            pooled = pooled.squeeze(1)  # (B, h)
        else:
            seq = torch.cat([u.unsqueeze(1), items], dim=1) + self.pos.weight[: L + 1]  # (B, 1 + L, h)
            pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=u.device), ~hist_mask], dim=1)
            causal = torch.triu(torch.ones(L + 1, L + 1, dtype=torch.bool, device=u.device), diagonal=1)
            out = self.encoder(seq, mask=causal, src_key_padding_mask=pad)  # (B, 1 + L, h)
            out = out[:, 1:]  # (B, L, h): state after each item
            if all_positions:
                x = torch.cat([self.norm(out), u.unsqueeze(1).expand(-1, L, -1)], dim=-1)  # (B, L, 2h)
                return F.normalize(self.mlp(x), dim=-1)
            pooled = out[:, -1]  # (B, h): latest item (left padding keeps it last)
        x = torch.cat([self.norm(pooled), u], dim=-1)  # (B, 2h)
        return F.normalize(self.mlp(x), dim=-1)


class TwoTower(nn.Module):
    def __init__(self, cfg: TowerConfig):
        super().__init__()
        if cfg.dim <= 0 or cfg.hidden <= 0:
            raise ValueError(
                f"the towers' width is unresolved (dim {cfg.dim}, hidden {cfg.hidden}): 0 means 'by the "
                "catalog's size', which models.retrieval.data.tower_config_for(shape) resolves; give "
                "a width when building a TowerConfig by hand"
            )
        self.cfg = cfg
        self.item = ItemTower(cfg)
        self.user = UserTower(cfg)

    def history(self, catalog, hist: torch.Tensor) -> torch.Tensor:
        """(B, L) catalog positions (-1 = padding) -> (B, L, hidden) item representations.

        Each distinct item of the batch is represented once and gathered: a batch of B x L
        slots holds far fewer distinct items (and many padding slots, which stay 0).
        """
        flat = hist.reshape(-1)  # (B * L,)
        real = flat >= 0
        uniq, inv = torch.unique(flat[real], return_inverse=True)
        reps = self.item.represent(catalog.features(uniq))  # (U, h)
        out = reps.new_zeros(flat.shape[0], reps.shape[-1])
        out[real] = reps[inv]
        return out.view(*hist.shape, -1)

    def users(self, catalog, user_hash: torch.Tensor, hist: torch.Tensor, all_positions: bool = False) -> torch.Tensor:
        """User vectors from hashed ids and left-padded histories of catalog positions."""
        return self.user(user_hash, self.history(catalog, hist), hist >= 0, all_positions=all_positions)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.item.ids.table.weight, self.user.ids.table.weight] if self.cfg.sparse else []

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]
