"""Semantic IDs: every item becomes 4 tokens (c1, c2, c3, c4) from its two-tower item vector.

Three levels of residual quantisation give (c1, c2, c3), each in 0..K-1 (K = 256 by default);
c4 is the collision token, the item's index among the items sharing its (c1, c2, c3) prefix
(in item-id order), so every item has a unique 4-token code (TIGER, NeurIPS'23).

The collision token's range C is sized from the data, apart from K: TIGER appends "as many
values as needed", and items the tokenizer cannot tell apart (identical vectors: items never
trained, embedded by content alone, with identical content) share one prefix however good the
codebooks are; 492 of them did in a 1M-item catalog, over a 256-value range. `fit_tokenizer`
sets C = `collision_size_for(largest prefix)`: at least K, else the next power of two at or
above twice the largest prefix, so new items can keep numbering a prefix before a refit is
needed. C belongs to the tokenizer (its config.json, the semantic-ID manifest); the retriever's
vocabulary (`Seq2SeqConfig.collision_size`), the trie and ETEGRec's recoding read it from there.
A tokenizer saved before C was stored loads with C = K, the range it was used with.

Two tokenizers, both encoding any vector later without retraining (so items added to the
catalog after training get codes from the same tokenizer):

- `ResidualKMeans` (no training): k-means on the vectors, then on the residuals, level by level
  (faiss.Kmeans). The product's default: on MovieLens its codes retrieve level with the
  RQ-VAE's over seeds (GRID, Ju et al. 2025, found the same) and cost no training.
- `RQVAE`: an MLP encoder (d -> 512 -> 256 -> 128 -> code_dim), three residual codebooks
  initialised by k-means on the first encodings, an MLP decoder back to d; loss =
  reconstruction MSE + sum over levels of codebook + 0.25 x commitment (straight-through
  gradients). No Dagster here.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.budget import examples_budget
from models.progress import Progress
from models.settings import setting
from models.retrieval.data import id_index

KINDS = ("rqvae", "rkmeans")
CODE_COLUMNS = ("c1", "c2", "c3", "c4")


@dataclass
class TokenizerConfig:
    kind: str = setting(
        "rkmeans",
        "rkmeans (residual k-means: no training, and on MovieLens level with the RQ-VAE as a retriever's "
        "codes over seeds, as GRID found) or rqvae (RQ-VAE, TIGER; ETEGRec mode needs it).",
    )
    levels: int = 3  # quantised levels before the collision token
    codebook_size: int = setting(
        256,
        "Codes per level (3 levels). The collision token's range is sized from the data when the "
        "tokenizer is fit (collision_size_for), at least this.",
    )
    code_dim: int = setting(32, "rqvae: latent size of the codewords.")
    hidden: tuple[int, ...] = setting((512, 256, 128), "rqvae: encoder MLP widths (decoder mirrored).")
    beta: float = setting(0.25, "rqvae: commitment weight.")
    epochs: int = setting(
        200,
        "rqvae: passes over the item vectors at most (dead codes restart each epoch, so more epochs "
        "mean fewer collisions); the work budget (max_examples) lowers it on large catalogs.",
    )
    max_examples: int = setting(
        2_000_000,
        "rqvae: work budget in item vectors seen, raised to min_epochs passes and lowered to "
        "`epochs` passes (models/budget.py; 0 = `epochs` passes): MovieLens' 9,066 items and the "
        "demo's 2,000 keep every epoch (1.8M, 0.4M vectors); 1M items get 2 passes.",
        ge=0,
    )
    min_epochs: float = setting(
        1.0, "rqvae: passes over the item vectors the work budget always allows, however large the catalog.", ge=0
    )
    batch_size: int = 1024
    lr: float = setting(1e-3, "rqvae: Adam learning rate.")
    kmeans_iters: int = 25  # k-means iterations per level (initialisation and the baseline)
    kmeans_max_points: int = 65_536  # k-means trains on a seeded sample above this many vectors
    seed: int = setting(0, "Seeds k-means and the RQ-VAE.")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {KINDS}, got {self.kind!r}")
        if self.levels != 3:
            raise ValueError(f"levels must be 3 (3 quantised codes + the collision token), got {self.levels}")
        if not 2 <= self.codebook_size <= 4096:
            raise ValueError(f"codebook_size must lie in 2..4096, got {self.codebook_size}")
        self.hidden = tuple(int(h) for h in self.hidden)

    def to_dict(self) -> dict:
        return {**asdict(self), "hidden": list(self.hidden)}


def kmeans(x: np.ndarray, k: int, *, iters: int, seed: int, max_points: int) -> np.ndarray:
    """(k, d) float32 centroids of x (faiss.Kmeans). Fewer distinct points than k: every point
    is a centroid and the rest are seeded copies with a little noise (a tiny catalog still gets
    a full codebook; the extra codes simply stay unused)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    rng = np.random.default_rng(seed)
    if n > max_points:
        x = x[rng.choice(n, max_points, replace=False)]
        n = max_points
    if n < k:
        extra = x[rng.integers(0, n, k - n)] + rng.normal(0, 1e-3, (k - n, d)).astype(np.float32)
        return np.concatenate([x, extra]).astype(np.float32)
    km = faiss.Kmeans(
        d,
        k,
        niter=iters,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(39, n // k + 1),
    )
    km.train(x)
    return km.centroids.copy()


def nearest(r: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(n, d), (K, d) -> (n,) index of the closest codeword (squared L2)."""
    d2 = (r * r).sum(1, keepdim=True) - 2 * r @ codebook.T + (codebook * codebook).sum(1)[None, :]  # (n, K)
    return d2.argmin(1)


class ResidualKMeans(nn.Module):
    """Residual k-means over the raw vectors: codebooks (levels, K, d)."""

    def __init__(self, cfg: TokenizerConfig, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        self.collision_size = cfg.codebook_size  # C: set from the data by fit_tokenizer
        self.codebooks = nn.Parameter(torch.zeros(cfg.levels, cfg.codebook_size, dim), requires_grad=False)

    def fit(self, xb: np.ndarray, log: Callable[[str], None] | None = None) -> dict:
        r = np.array(xb, dtype=np.float32)  # writable: torch reads it below
        for level in range(self.cfg.levels):
            c = kmeans(
                r,
                self.cfg.codebook_size,
                iters=self.cfg.kmeans_iters,
                seed=self.cfg.seed + level,
                max_points=self.cfg.kmeans_max_points,
            )
            self.codebooks.data[level] = torch.as_tensor(c)
            idx = nearest(torch.as_tensor(r), self.codebooks[level]).numpy()
            r = r - c[idx]
        return {}

    @torch.no_grad()
    def encode(self, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, d) -> (n, levels) codes and (n, d) reconstructions."""
        r, recon, codes = xb.float(), torch.zeros_like(xb, dtype=torch.float32), []
        for level in range(self.cfg.levels):
            idx = nearest(r, self.codebooks[level])
            e = self.codebooks[level][idx]
            codes.append(idx)
            recon, r = recon + e, r - e
        return torch.stack(codes, 1), recon


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    """Encoder MLP -> residual quantisation over `levels` codebooks -> decoder MLP."""

    def __init__(self, cfg: TokenizerConfig, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        self.collision_size = cfg.codebook_size  # C: set from the data by fit_tokenizer
        self.encoder = _mlp([dim, *cfg.hidden, cfg.code_dim])
        self.decoder = _mlp([cfg.code_dim, *reversed(cfg.hidden), dim])
        self.codebooks = nn.Parameter(torch.randn(cfg.levels, cfg.codebook_size, cfg.code_dim) * 0.01)
        # inputs are standardised per dimension (unit item vectors have tiny coordinates)
        self.register_buffer("x_mean", torch.zeros(dim))
        self.register_buffer("x_std", torch.ones(dim))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, c) latents -> (n, levels) codes, (n, c) quantised latents (straight-through),
        codebook + commitment loss."""
        r, q, codes, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for level in range(self.cfg.levels):
            cb = self.codebooks[level]  # (K, c)
            idx = nearest(r.detach(), cb.detach())
            e = cb[idx]  # (n, c)
            loss = loss + ((r.detach() - e) ** 2).sum(1).mean() + self.cfg.beta * ((r - e.detach()) ** 2).sum(1).mean()
            codes.append(idx)
            q, r = q + e, r - e.detach()
        q_st = z + (q - z).detach()  # straight-through: the decoder's gradient reaches the encoder
        return torch.stack(codes, 1), q_st, loss

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, d) vectors -> (n, levels) codes, (n, d) reconstructions (standardised), VQ loss."""
        codes, q, vq_loss = self.quantise(self.encoder(self.standardise(x)))
        return codes, self.decoder(q), vq_loss

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_std

    @torch.no_grad()
    def residuals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The residual each level quantises, for vectors x: levels x (n, code_dim)."""
        r, out = self.encoder(self.standardise(x)), []
        for level in range(self.cfg.levels):
            out.append(r)
            r = r - self.codebooks[level][nearest(r, self.codebooks[level])]
        return out

    def code_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(n, code_dim) latents -> (n, levels, K): minus the squared distance of each level's
        residual to that level's codewords, the code distribution a latent induces (ETEGRec's
        sequence-item alignment compares two of them). Differentiable in z and the codebooks."""
        r, out = z, []
        for level in range(self.cfg.levels):
            cb = self.codebooks[level]  # (K, c)
            d2 = (r * r).sum(1, keepdim=True) - 2 * r @ cb.T + (cb * cb).sum(1)[None, :]  # (n, K)
            out.append(-d2)
            r = r - cb[d2.detach().argmin(1)]
        return torch.stack(out, 1)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, d) raw vectors -> the RQ-VAE's own loss (reconstruction MSE + codebook and
        commitment terms), the (n, levels) codes, the (n, code_dim) latents and the (n, d)
        reconstructions (standardised)."""
        target = self.standardise(x)
        z = self.encoder(target)
        codes, q, vq = self.quantise(z)
        recon = self.decoder(q)
        return ((recon - target) ** 2).sum(1).mean() + vq, codes, z, recon

    @torch.no_grad()
    def init_codebooks(self, xb: torch.Tensor) -> None:
        """k-means on the encodings of the vectors, level by level on the residuals."""
        r = self.encoder(self.standardise(xb)).numpy()
        for level in range(self.cfg.levels):
            c = kmeans(
                r,
                self.cfg.codebook_size,
                iters=self.cfg.kmeans_iters,
                seed=self.cfg.seed + level,
                max_points=self.cfg.kmeans_max_points,
            )
            self.codebooks.data[level] = torch.as_tensor(c)
            r = r - c[nearest(torch.as_tensor(r), self.codebooks[level]).numpy()]

    def fit(self, xb: np.ndarray, log: Callable[[str], None] | None = None) -> dict:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        x = torch.from_numpy(np.array(xb, dtype=np.float32))  # a copy: the vectors may be a read-only Arrow view
        self.x_mean.copy_(x.mean(0))
        self.x_std.copy_(x.std(0).clamp(min=1e-6))
        self.init_codebooks(x)
        opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = len(x)
        if not n:
            return {}
        budget = examples_budget(n, epochs=cfg.epochs, max_examples=cfg.max_examples, min_epochs=cfg.min_epochs)
        epochs = math.ceil(budget / n)  # the last one may be partial
        progress = Progress("rq-vae", epochs, "epochs", log)
        history, resets = [], 0
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            total, used = 0.0, torch.zeros(cfg.levels, cfg.codebook_size, dtype=torch.long)
            m = min(n, budget - epoch * n)  # vectors this epoch
            for s in range(0, m, cfg.batch_size):
                xb_ = x[perm[s : min(m, s + cfg.batch_size)]]
                loss, codes, _, _ = self.loss(xb_)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(xb_)
                for level in range(cfg.levels):
                    used[level] += torch.bincount(codes[:, level], minlength=cfg.codebook_size)
            history.append(total / m)
            resets += self.restart_dead_codes(x, used, gen)
            progress.update()
        rule = "epochs" if budget == cfg.epochs * n else "max_examples"
        done = {"examples": budget, "epochs_run": round(budget / n, 3), "budget_rule": rule}
        return (
            {"loss_first": history[0], "loss_last": history[-1], "dead_code_restarts": resets, **done}
            if history
            else {}
        )

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor, used: torch.Tensor, gen: torch.Generator, sample: int = 8192) -> int:
        """Codewords no item chose this epoch move onto the residuals of random items (the usual
        remedy for codebook collapse, which otherwise leaves a few codes holding most items)."""
        dead = used == 0  # (levels, K)
        if not dead.any():
            return 0
        rows = torch.randperm(len(x), generator=gen)[:sample]
        res = self.residuals(x[rows])
        for level in range(self.cfg.levels):
            idx = torch.nonzero(dead[level]).flatten()
            if len(idx):
                pick = torch.randint(0, len(rows), (len(idx),), generator=gen)
                self.codebooks.data[level, idx] = res[level][pick]
        return int(dead.sum())

    @torch.no_grad()
    def encode(self, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.eval()
        codes, recon, _ = self(xb.float())
        return codes, recon * self.x_std + self.x_mean  # back to the vectors' own space


def build_tokenizer(cfg: TokenizerConfig, dim: int) -> nn.Module:
    return RQVAE(cfg, dim) if cfg.kind == "rqvae" else ResidualKMeans(cfg, dim)


def encode_vectors(tokenizer: nn.Module, xb: np.ndarray, batch: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) vectors -> (n, levels) int64 codes and (n,) squared reconstruction errors."""
    codes, err = [], []
    for s in range(0, len(xb), batch):
        x = torch.from_numpy(np.array(xb[s : s + batch], dtype=np.float32))
        c, recon = tokenizer.encode(x)
        codes.append(c.numpy())
        err.append(((recon - x) ** 2).sum(1).numpy())
    if not codes:
        return np.empty((0, tokenizer.cfg.levels), np.int64), np.empty(0, np.float32)
    return np.concatenate(codes).astype(np.int64), np.concatenate(err)


def collision_size_for(max_per_prefix: int, codebook_size: int) -> int:
    """The collision token's range C for a catalog whose fullest 3-code prefix holds
    `max_per_prefix` items: K when twice that fits in K (the range every catalog had before it
    was sized, and what a reasonable tokenizer needs), else the next power of two at or above
    twice it (room for new items in that prefix before a refit)."""
    need = 2 * max(int(max_per_prefix), 1)
    return max(int(codebook_size), 1 << (need - 1).bit_length())


def assign_collision_tokens(prefix: np.ndarray, capacity: int, existing: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) prefixes in the order the items should be numbered -> (n,) collision tokens: the
    index of each item among the items sharing its prefix, after the `existing` (m, 4) codes
    already taken (new items continue each prefix's count, so old codes never change).
    Raises when a prefix would hold more than `capacity` (the tokenizer's collision_size) items."""
    n = len(prefix)
    if n == 0:
        return np.empty(0, np.int64)
    rank = (
        pd.DataFrame({"a": prefix[:, 0], "b": prefix[:, 1], "c": prefix[:, 2]})
        .groupby(["a", "b", "c"], sort=False)
        .cumcount()
        .to_numpy()
    )
    start = np.zeros(n, np.int64)
    if existing is not None and len(existing):
        taken = pd.DataFrame(existing[:, :4], columns=["a", "b", "c", "d"]).groupby(["a", "b", "c"])["d"].max() + 1
        new = pd.DataFrame({"a": prefix[:, 0], "b": prefix[:, 1], "c": prefix[:, 2]})
        start = new.join(taken.rename("start"), on=["a", "b", "c"])["start"].fillna(0).to_numpy(np.int64)
    tokens = start + rank
    if tokens.max() >= capacity:
        worst = int(np.argmax(tokens))
        raise ValueError(
            f"{int(tokens.max()) + 1} items share the semantic-ID prefix {tuple(int(v) for v in prefix[worst])}, more than "
            f"the collision token's range ({capacity}, sized when the tokenizer was fit): refit the tokenizer "
            "(item_semantic_ids with retrain: true), which sizes the range from the catalog as it is now"
        )
    return tokens


def code_stats(codes: np.ndarray, recon_error: np.ndarray, codebook_size: int) -> dict:
    """The figures the asset reports: codebook utilisation per level, collisions before the 4th
    token, reconstruction error and the distribution of the shortest unique prefix length."""
    n = len(codes)
    out: dict = {"items": n}
    for level in range(3):
        out[f"utilisation_c{level + 1}"] = len(np.unique(codes[:, level])) / codebook_size
    prefix = pd.DataFrame(codes[:, :3], columns=["a", "b", "c"])
    sizes = prefix.groupby(["a", "b", "c"]).size() if n else pd.Series(dtype=int)
    out["collision_rate"] = (
        float((prefix.duplicated(keep=False)).mean()) if n else 0.0
    )  # share of items sharing a prefix
    out["distinct_prefixes"] = int(len(sizes))
    out["max_items_per_prefix"] = int(sizes.max()) if n else 0
    out["recon_mse"] = float(np.mean(recon_error)) if n else 0.0
    # shortest prefix that names the item alone (4 = the collision token is needed)
    length = np.full(n, 4)
    for k in (3, 2, 1):
        unique = ~pd.DataFrame(codes[:, :k]).duplicated(keep=False).to_numpy()
        length[unique] = k
    for k in (1, 2, 3, 4):
        out[f"unique_at_length_{k}"] = float(np.mean(length == k)) if n else 0.0
    return out


@dataclass
class SemanticIds:
    """The code table: item ids and their (n, 4) codes, plus the tokenizer that made them."""

    item_ids: np.ndarray  # (n,) object
    codes: np.ndarray  # (n, 4) int64: c1, c2, c3 in 0..K-1, c4 the collision token in 0..C-1
    stats: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"item_id": self.item_ids, **{c: self.codes[:, i] for i, c in enumerate(CODE_COLUMNS)}})


def fit_tokenizer(
    xb: np.ndarray, cfg: TokenizerConfig, log: Callable[[str], None] | None = None
) -> tuple[nn.Module, dict]:
    """A tokenizer fit on the vectors `xb`, its collision range sized from their codes
    (`collision_size_for` the fullest prefix), and the fit's figures."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)  # before the layers exist: their initial weights are part of the seeded run
    tok = build_tokenizer(cfg, xb.shape[1])
    fit = tok.fit(xb, log=log)
    tok.eval()
    codes, _ = encode_vectors(tok, xb)
    fullest = max_items_per_prefix(codes)
    tok.collision_size = collision_size_for(fullest, cfg.codebook_size)
    if log is not None and tok.collision_size != cfg.codebook_size:
        log(
            f"tokenizer: {fullest:,} items share one 3-code prefix; the collision token's range is "
            f"{tok.collision_size:,} (codebook size {cfg.codebook_size})"
        )
    return tok, {**fit, "fit_seconds": round(time.perf_counter() - t0, 2)}


def max_items_per_prefix(codes: np.ndarray) -> int:
    """The most items any one (c1, c2, c3) prefix holds in the (n, >=3) codes."""
    if not len(codes):
        return 0
    _, counts = np.unique(np.ascontiguousarray(codes[:, :3]), axis=0, return_counts=True)
    return int(counts.max())


def tokenize(tokenizer: nn.Module, item_ids, xb: np.ndarray, *, existing: SemanticIds | None = None) -> SemanticIds:
    """Codes for the items (their vectors `xb`); with `existing`, those items keep their codes
    and only the others are encoded, continuing each prefix's collision count."""
    item_ids = np.asarray(item_ids, dtype=object)
    order = np.argsort(item_ids.astype(str), kind="stable")  # collision tokens numbered in item-id order
    item_ids, xb = item_ids[order], xb[order]
    codes = np.zeros((len(item_ids), 4), np.int64)
    is_new = np.ones(len(item_ids), bool)
    prior = None
    if existing is not None and len(existing.item_ids):
        pos = id_index(existing.item_ids).get_indexer(pd.Series(item_ids, dtype=object))
        is_new = pos < 0
        codes[~is_new] = existing.codes[pos[~is_new]]
        prior = existing.codes[pos[~is_new]]
    new_codes, err = encode_vectors(tokenizer, xb[is_new])
    codes[is_new, :3] = new_codes
    codes[is_new, 3] = assign_collision_tokens(new_codes, tokenizer.collision_size, prior)
    _, all_err = encode_vectors(tokenizer, xb) if existing is not None else (None, err)
    stats = {
        **code_stats(codes, all_err, tokenizer.cfg.codebook_size),
        "collision_size": int(tokenizer.collision_size),
        "encoded": int(is_new.sum()),
        "kept": int((~is_new).sum()),
    }
    return SemanticIds(item_ids, codes, stats)


def duplicate_codes(codes: np.ndarray) -> int:
    """How many items share their full 4-token code with another item (0 = every code unique)."""
    return int(pd.DataFrame(codes).duplicated(keep=False).sum())


def codes_by_position(catalog, item_ids, codes: np.ndarray) -> np.ndarray:
    """(N + 1, 4) codes of each catalog position (the last row, -1s, is padding), from the
    semantic-ID table (item_ids, codes). Raises when a catalog item has no code."""
    pos = id_index(item_ids).get_indexer(pd.Series(catalog.item_ids, dtype=object))
    if (pos < 0).any():
        missing = catalog.item_ids[pos < 0]
        raise ValueError(
            f"{len(missing)} catalog items have no semantic ID (first: {missing[0]!r}): materialize item_semantic_ids"
        )
    return np.concatenate([np.asarray(codes, np.int64)[pos], np.full((1, 4), -1, np.int64)])
