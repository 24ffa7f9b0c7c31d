"""The candidate-isolation ranker (X's Phoenix ranking transformer, small).

One sequence per (user, block of candidates):

    [user] [history_1 .. history_H] [candidate_1 .. candidate_C]

- user token: the hashed user id (n_hashes lookups, concatenated and projected);
- history tokens: the hashed item id + what the user did with it, Phoenix's action embedding
  ``(2a - 1) @ W_action`` of the multi-hot action vector a, concatenated and projected, + a
  learned position (latest last); left-padded, padding masked out;
- candidate tokens: the hashed item id (no action: it has not happened) + a projection of the
  retriever's score for it (``use_retrieval_score``; Phoenix does not have this input, but our
  ranker learns from far fewer users than the retriever and starts from its order this way;
  still a per-candidate input, so isolation holds) + a projection of the candidate's features
  (``n_features``, models/ranking/features.py: popularity and its trend, age, time since the
  user's last event, content against the history, retrieval score and rank), standardised by
  the train set's mean and deviation (buffers saved with the weights).

The attention mask (``isolation_mask``, built once per shape and cached) is Phoenix's
``make_recsys_attn_mask``: causal over user + history; each candidate attends to user +
history + itself, never to another candidate. So a candidate's outputs do not depend on which
candidates share its sequence: scores are cacheable and consistent. Training runs sequences of
``candidates_per_pass`` candidates (Phoenix: 32) through the mask. Scoring uses what the mask
implies: the context never sees a candidate, so its keys and values are computed once per user
(``encode_context``) and every candidate attends to them plus itself (``score_with_context``;
tested against the masked forward). Candidates are padded to a multiple of
``candidates_per_pass`` with an empty item, so one candidate's numbers are computed by the same
kernels whatever its neighbours are (tested bit for bit). The final candidate states ->
LayerNorm -> one logit per action, plus two direct paths that start at zero or at the
retriever's order: ``skip * retrieval score`` and a small MLP over the features (its output
layer zero-initialised), so an untrained ranker orders exactly as the retriever does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.ranking.features import FEATURES, N_FEATURES
from models.retrieval.towers import HashedIdEmbedding
from models.settings import setting


RETRIEVAL_FEATURES = (FEATURES.index("retrieval_score"), FEATURES.index("log_retrieval_rank"))


@dataclass
class RankerConfig:
    n_actions: int  # one sigmoid head per action
    dim: int = setting(32, "Ranker token width.")
    heads: int = setting(2, "Attention heads (dim must divide).")
    layers: int = setting(2, "Transformer blocks.")
    ffn: int = 64  # hidden width of each block's MLP
    id_dim: int = 16  # per-hash id vector size; n_hashes of them are concatenated and projected
    n_hashes: int = 2  # hash functions per id (Phoenix uses 2)
    item_buckets: int = 4096  # item-id hash table rows (bucket 0 = padding)
    user_buckets: int = 4096  # user-id hash table rows
    history_len: int = setting(32, "Latest exposures with an action the ranker reads (Phoenix: 128).")
    candidates_per_pass: int = setting(
        32, "Candidate slots per sequence (Phoenix: 32); more candidates take more sequences."
    )
    dropout: float = 0.1
    use_retrieval_score: bool = True  # the retriever's score as a candidate input and a direct path
    # (False also blanks the retrieval score and rank features: the ranker orders without them)
    user_id: bool = True  # a hashed user-id token (False: the user token is the segment vector alone)
    candidate_id: bool = False  # a candidate's hashed id in its token; off by default: the id table
    # memorised the train lists (MovieLens: without it valid and test rose on every seed; README,
    # ranking section), so a candidate reads its features and score, the history its items' ids
    n_features: int = N_FEATURES  # candidate features (models/ranking/features.py); 0 = none
    action_signs: tuple[float, ...] | None = None  # +1 / -1 per action (its weight's sign): how the
    # direct path starts, so an untrained ranker orders candidates exactly as the retriever does

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"ranker dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.n_actions < 1:
            raise ValueError("the ranker needs at least one action")

    def to_dict(self) -> dict:
        return asdict(self)


def ranker_config_for(weights: list[float], n_items: int, n_users: int, **fields) -> RankerConfig:
    """A RankerConfig for an action vocabulary (one head per weight, the direct path starting at
    each weight's sign) and id tables of 2x the items / users (at least 1,024 rows)."""
    return RankerConfig(
        n_actions=len(weights),
        action_signs=tuple(1.0 if w >= 0 else -1.0 for w in weights),
        item_buckets=max(1024, 2 * n_items + 1),
        user_buckets=max(1024, 2 * n_users + 1),
        **fields,
    )


@lru_cache(maxsize=32)
def isolation_mask(n_context: int, n_candidates: int) -> torch.Tensor:
    """(T, T) bool, True = may attend, T = n_context + n_candidates (context = user + history):
    causal over the context; candidate i sees the whole context and itself only."""
    T = n_context + n_candidates
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    mask[n_context:, n_context:] = torch.eye(n_candidates, dtype=torch.bool)
    mask.requires_grad_(False)
    return mask


class Block(nn.Module):
    """Pre-norm transformer block with an explicit boolean attention mask."""

    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.dim)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, cfg.dim))
        self.drop = nn.Dropout(cfg.dropout)

    def _qkv(self, x: torch.Tensor):
        B, T, D = x.shape
        # (B, T, 3D) -> 3 x (B, heads, T, D / heads)
        return self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)

    def _finish(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape  # a: (B, heads, T, D / heads)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, T, D)))  # (B, T, D)
        return x + self.drop(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, keep_kv: bool = False):
        q, k, v = self._qkv(x)  # mask: (B, 1, T, T) bool
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0)
        return (self._finish(x, a), (k, v)) if keep_kv else self._finish(x, a)

    def candidates(self, c: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor, ctx_valid: torch.Tensor):
        """The isolation mask's rows for candidates, without building them: c (B, C, D) attends to
        the context's keys (B, heads, T, d) where ctx_valid (B, T), and to itself only."""
        q, k, v = self._qkv(c)  # (B, heads, C, d)
        scale = q.shape[-1] ** -0.5
        ctx = (q @ k_ctx.transpose(-1, -2)) * scale  # (B, heads, C, T)
        ctx = ctx.masked_fill(~ctx_valid[:, None, None, :], -torch.inf)
        own = (q * k).sum(-1, keepdim=True) * scale  # (B, heads, C, 1)
        w = torch.softmax(torch.cat([ctx, own], dim=-1), dim=-1)  # (B, heads, C, T + 1)
        a = w[..., :-1] @ v_ctx + w[..., -1:] * v  # (B, heads, C, d)
        return self._finish(c, a)


class Ranker(nn.Module):
    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.user = HashedIdEmbedding(cfg.user_buckets, cfg.id_dim, cfg.n_hashes, D, sparse=False)
        self.item = HashedIdEmbedding(cfg.item_buckets, cfg.id_dim, cfg.n_hashes, D, sparse=False)
        self.action = nn.Linear(cfg.n_actions, D, bias=False)  # Phoenix: (2a - 1) @ W_action
        self.history_proj = nn.Linear(2 * D, D)
        self.position = nn.Parameter(torch.zeros(cfg.history_len, D))
        self.segment = nn.Parameter(torch.zeros(3, D))  # user, history, candidate
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(D)
        self.heads = nn.Linear(D, cfg.n_actions)
        self.score_proj = nn.Linear(1, D) if cfg.use_retrieval_score else None
        # logits = heads(transformer) + skip * retrieval score. The heads start at zero and the
        # skip at 5 x the action's sign: before training, the weighted score rises with the
        # retrieval score (the retriever's order); training learns what to change.
        nn.init.zeros_(self.heads.weight)
        signs = torch.tensor(cfg.action_signs if cfg.action_signs else [0.0] * cfg.n_actions, dtype=torch.float32)
        self.skip = nn.Parameter(5.0 * signs) if cfg.use_retrieval_score else None
        F_ = cfg.n_features
        self.feature_proj = nn.Linear(F_, D) if F_ else None
        self.feature_head = (
            nn.Sequential(nn.Linear(F_, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, cfg.n_actions)) if F_ else None
        )
        if F_:
            nn.init.zeros_(self.feature_head[-1].weight)
            nn.init.zeros_(self.feature_head[-1].bias)
        # the train set's feature mean and deviation (set_feature_scale), saved with the weights
        self.register_buffer("feature_mean", torch.zeros(F_))
        self.register_buffer("feature_std", torch.ones(F_))

    @torch.no_grad()
    def set_feature_scale(self, features: torch.Tensor, valid: torch.Tensor) -> None:
        """Standardise features by their mean / deviation over valid slots: features (G, C, F), valid (G, C)."""
        x = features[valid]  # (n, F)
        if len(x):
            self.feature_mean.copy_(x.mean(0))
            self.feature_std.copy_(x.std(0, unbiased=False).clamp(min=1e-3))

    def _features(self, cand_feat) -> torch.Tensor:
        if cand_feat is None:
            raise ValueError(f"this ranker reads {self.cfg.n_features} candidate features: pass cand_feat")
        assert cand_feat.shape[-1] == self.cfg.n_features, cand_feat.shape
        x = (cand_feat.float() - self.feature_mean) / self.feature_std  # (B, C, F)
        if not self.cfg.use_retrieval_score:
            x = x.clone()
            x[..., list(RETRIEVAL_FEATURES)] = 0.0
        return x

    def context_tokens(self, user_hash, hist_hash, hist_actions, hist_valid) -> torch.Tensor:
        B, H, _ = hist_hash.shape
        assert H == self.cfg.history_len and hist_actions.shape == (B, H, self.cfg.n_actions), hist_actions.shape
        u = self.segment[0].expand(B, 1, -1)  # (B, 1, D)
        if self.cfg.user_id:
            u = u + self.user(user_hash)[:, None, :]
        act = self.action(2.0 * hist_actions - 1.0)  # (B, H, D)
        h = self.history_proj(torch.cat([self.item(hist_hash), act], dim=-1)) + self.position + self.segment[1]
        h = h * hist_valid[..., None]  # (B, H, D): padding rows zeroed (and masked below)
        return torch.cat([u, h], dim=1)  # (B, 1 + H, D)

    def _logits(self, c: torch.Tensor, cand_score, cand_feat=None) -> torch.Tensor:
        out = self.heads(self.norm(c))  # (B, C, A)
        if self.skip is not None:
            sc = torch.where(torch.isfinite(cand_score), cand_score, 0.0).to(out.dtype)  # (B, C)
            out = out + sc[..., None] * self.skip  # (B, C, 1) * (A,) -> (B, C, A)
        if self.feature_head is not None:
            out = out + self.feature_head(self._features(cand_feat))  # (B, C, F) -> (B, C, A)
        return out

    def candidate_tokens(self, cand_hash, cand_score, cand_feat=None) -> torch.Tensor:
        B, C, _ = cand_hash.shape
        c = self.segment[2].expand(B, C, -1)  # (B, C, D)
        if self.cfg.candidate_id:
            c = c + self.item(cand_hash)
        if self.score_proj is not None:
            if cand_score is None:
                raise ValueError("this ranker reads the retriever's score of each candidate: pass cand_score")
            sc = torch.where(torch.isfinite(cand_score), cand_score, 0.0).to(c.dtype)  # padding: 0
            c = c + self.score_proj(sc[..., None])  # (B, C, 1) -> (B, C, D)
        if self.feature_proj is not None:
            c = c + self.feature_proj(self._features(cand_feat))  # (B, C, F) -> (B, C, D)
        return c

    def forward(
        self,
        user_hash: torch.Tensor,
        hist_hash: torch.Tensor,
        hist_actions: torch.Tensor,
        hist_valid: torch.Tensor,
        cand_hash: torch.Tensor,
        cand_score: torch.Tensor | None = None,
        cand_feat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One sequence per row through the isolation mask (training): user_hash (B, n_hashes);
        hist_hash (B, H, n_hashes); hist_actions (B, H, A) multi-hot; hist_valid (B, H) bool;
        cand_hash (B, C, n_hashes); cand_score (B, C) retrieval scores; cand_feat (B, C, F)
        features -> (B, C, A) logits."""
        B, H, _ = hist_hash.shape
        C = cand_hash.shape[1]
        x = torch.cat(
            [
                self.context_tokens(user_hash, hist_hash, hist_actions, hist_valid),
                self.candidate_tokens(cand_hash, cand_score, cand_feat),
            ],
            dim=1,
        )  # (B, 1 + H + C, D)
        keys = torch.cat(
            [torch.ones(B, 1, dtype=torch.bool), hist_valid, torch.ones(B, C, dtype=torch.bool)], dim=1
        )  # (B, T): padding history never a key
        mask = isolation_mask(1 + H, C)[None, None] & keys[:, None, None, :]  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask)
        return self._logits(x[:, 1 + H :], cand_score, cand_feat)  # (B, C, A)

    def encode_context(self, user_hash, hist_hash, hist_actions, hist_valid) -> tuple[list, torch.Tensor]:
        """Per layer, the context's keys and values (it never attends to a candidate, so they do
        not depend on the candidates): computed once per user, reused for every candidate."""
        B, H, _ = hist_hash.shape
        x = self.context_tokens(user_hash, hist_hash, hist_actions, hist_valid)  # (B, 1 + H, D)
        valid = torch.cat([torch.ones(B, 1, dtype=torch.bool), hist_valid], dim=1)  # (B, T)
        mask = isolation_mask(1 + H, 0)[None, None] & valid[:, None, None, :]  # (B, 1, T, T)
        kv = []
        for block in self.blocks:
            x, (k, v) = block(x, mask, keep_kv=True)
            kv.append((k, v))
        return kv, valid

    def score_with_context(
        self, kv: list, valid: torch.Tensor, cand_hash, cand_score=None, cand_feat=None
    ) -> torch.Tensor:
        """(B, C, A) logits of candidates against encode_context's output: the same numbers as
        forward (isolation mask rows), without recomputing the context per block of candidates."""
        c = self.candidate_tokens(cand_hash, cand_score, cand_feat)  # (B, C, D)
        for block, (k, v) in zip(self.blocks, kv):
            c = block.candidates(c, k, v, valid)
        return self._logits(c, cand_score, cand_feat)


def weighted_score(probs: torch.Tensor, weights: torch.Tensor, offset: float = 1e-3) -> torch.Tensor:
    """Phoenix's weighted scorer: s = sum_a w_a P(a); s >= 0 -> s + offset; s < 0 ->
    (s + |sum of negative weights|) / sum |w| * offset, a small positive number that keeps
    the order (the more negative, the lower) below every non-negative score.
    probs (..., A), weights (A,) -> (...,)."""
    s = probs @ weights  # (...,)
    neg = weights.clamp(max=0).abs().sum()
    total = weights.abs().sum()
    return torch.where(s >= 0, s + offset, (s + neg) / total * offset)


@torch.no_grad()
def score_candidates(
    model: Ranker,
    user_hash: torch.Tensor,
    hist_hash: torch.Tensor,
    hist_actions: torch.Tensor,
    hist_valid: torch.Tensor,
    cand_hash: torch.Tensor,
    cand_score: torch.Tensor | None = None,
    cand_feat: torch.Tensor | None = None,
    max_sequences: int = 2048,
) -> torch.Tensor:
    """(G, C, A) action probabilities for C candidates of each of G users, eval mode. Each
    user's context goes through the blocks once (encode_context); candidates are padded with the
    empty item to a multiple of cfg.candidates_per_pass, so a candidate scored alone or among 31
    others goes through the same shapes (bit-identical numbers)."""
    model.eval()
    G, C, nh = cand_hash.shape
    P = model.cfg.candidates_per_pass
    nb = -(-C // P)
    cand_hash = torch.cat([cand_hash, torch.zeros(G, nb * P - C, nh, dtype=cand_hash.dtype)], dim=1)  # (G, nb * P, nh)
    if cand_score is not None:
        cand_score = torch.cat([cand_score.float(), torch.zeros(G, nb * P - C)], dim=1)  # (G, nb * P)
    if cand_feat is not None:
        pad = torch.zeros(G, nb * P - C, cand_feat.shape[-1])
        cand_feat = torch.cat([cand_feat.float(), pad], dim=1)  # (G, nb * P, F)
    out = []
    users = max(1, max_sequences // nb)
    for s in range(0, G, users):
        e = min(G, s + users)
        kv, valid = model.encode_context(user_hash[s:e], hist_hash[s:e], hist_actions[s:e], hist_valid[s:e])
        logits = model.score_with_context(
            kv,
            valid,
            cand_hash[s:e],
            None if cand_score is None else cand_score[s:e],
            None if cand_feat is None else cand_feat[s:e],
        )
        out.append(torch.sigmoid(logits))  # (b, nb * P, A)
    return torch.cat(out)[:, :C]
