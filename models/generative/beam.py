"""Constrained beam search: the decoder only ever extends a prefix with a code some real item has
next, so every finished beam is a catalog item.

The trie is stored level by level in CSR form (no Python per node): for prefixes of length l,
the sorted integer keys of the prefixes (mixed radix: key = key * size_i + code_i over the
levels so far, sizes (K, K, K, C): the collision token has its own range), pointers into the
sorted child codes. A batch of prefixes gets its (M, size_l) mask of allowed next codes by one
searchsorted and one scatter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from models.generative.seq2seq import GenerativeRetriever


class PrefixTrie:
    def __init__(self, codes: np.ndarray, level_sizes: int | Sequence[int]):
        """codes: (n, 4) int64 unique codes; row i is item i. level_sizes: codes per level,
        (K, K, K, C) (the retriever's `cfg.level_sizes`), or one K for every level."""
        codes = np.asarray(codes, dtype=np.int64)
        assert codes.ndim == 2 and codes.shape[1] == 4, codes.shape
        sizes = (int(level_sizes),) * 4 if isinstance(level_sizes, (int, np.integer)) else tuple(map(int, level_sizes))
        assert len(sizes) == 4, sizes
        self.sizes = sizes
        if math.prod(sizes) >= 2**63:
            raise ValueError(f"level sizes {sizes}: a 4-code key would overflow int64")
        for level, size in enumerate(sizes):
            if len(codes) and (codes[:, level].min() < 0 or codes[:, level].max() >= size):
                raise ValueError(
                    f"code c{level + 1} must lie in 0..{size - 1}, got {codes[:, level].min()}..{codes[:, level].max()}"
                    + (
                        " (the collision token's range is the tokenizer's: build the retriever from it)"
                        if level == 3
                        else ""
                    )
                )
        self.parent_keys, self.ptr, self.children = [], [], []
        key = np.zeros(len(codes), np.int64)
        for level in range(4):
            pairs = np.unique(np.stack([key, codes[:, level]], 1), axis=0)  # (E, 2) sorted by (parent, code)
            parents, start = np.unique(pairs[:, 0], return_index=True)
            self.parent_keys.append(torch.as_tensor(parents))
            self.ptr.append(torch.as_tensor(np.append(start, len(pairs))))
            self.children.append(torch.as_tensor(pairs[:, 1]))
            key = key * sizes[level] + codes[:, level]
        order = np.argsort(key)
        self.full_keys = torch.as_tensor(key[order])
        self.item_rows = torch.as_tensor(order)
        if len(key) and (np.diff(self.full_keys.numpy()) == 0).any():
            raise ValueError("semantic IDs are not unique: two items share a 4-token code")

    def __len__(self) -> int:
        return len(self.full_keys)

    def allowed(self, level: int, keys: torch.Tensor) -> torch.Tensor:
        """(M,) prefix keys of length `level` -> (M, sizes[level]) bool: the codes that extend
        them to a prefix of some item. A key that is no prefix allows nothing."""
        pk, ptr, ch = self.parent_keys[level], self.ptr[level], self.children[level]
        M = len(keys)
        node = torch.searchsorted(pk, keys).clamp(max=max(len(pk) - 1, 0))
        found = pk[node] == keys if len(pk) else torch.zeros(M, dtype=torch.bool)
        start = ptr[node]
        count = torch.where(found, ptr[node + 1] - start, torch.zeros_like(start))  # (M,)
        rows = torch.repeat_interleave(torch.arange(M), count)  # (E,)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        cols = ch[torch.repeat_interleave(start, count) + torch.arange(len(rows)) - first]
        mask = torch.zeros(M, self.sizes[level], dtype=torch.bool)
        mask[rows, cols] = True
        return mask

    def item_of(self, keys: torch.Tensor) -> torch.Tensor:
        """(...) full 4-code keys -> item rows, -1 where no item has that code."""
        i = torch.searchsorted(self.full_keys, keys).clamp(max=max(len(self.full_keys) - 1, 0))
        return torch.where(self.full_keys[i] == keys, self.item_rows[i], torch.full_like(keys, -1))


@torch.no_grad()
def beam_search(
    model: GenerativeRetriever, trie: PrefixTrie, hist: torch.Tensor, beam: int, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L, 4) history codes -> (B, beam) item rows (-1 where fewer items exist) and their
    log-probabilities, best first. Batched over users; each level keeps the `beam` best
    prefixes per user among the trie-allowed extensions."""
    model.eval()
    out_items, out_scores = [], []
    for s in range(0, len(hist), batch):
        items, scores = _beam_batch(model, trie, hist[s : s + batch], beam)
        out_items.append(items)
        out_scores.append(scores)
    if not out_items:
        return torch.empty(0, beam, dtype=torch.long), torch.empty(0, beam)
    return torch.cat(out_items), torch.cat(out_scores)


def _beam_batch(model, trie, hist, beam):
    B = len(hist)
    assert trie.sizes == model.cfg.level_sizes, (trie.sizes, model.cfg.level_sizes)
    memory, mem_mask = model.encode(hist)  # (B, S, D), (B, S)
    prefix = torch.zeros(B, 1, 0, dtype=torch.long)  # (B, nb, t)
    keys = torch.zeros(B, 1, dtype=torch.long)  # (B, nb)
    scores = torch.zeros(B, 1)  # (B, nb)
    for level in range(4):
        K = trie.sizes[level]  # codes at this level
        nb = prefix.shape[1]
        M = B * nb
        h = model.decode(prefix.reshape(M, level), memory.repeat_interleave(nb, 0), mem_mask.repeat_interleave(nb, 0))[
            :, -1
        ]  # (M, D)
        mask = trie.allowed(level, keys.reshape(M))  # (M, K)
        logp = torch.log_softmax(model.level_logits(h, level).masked_fill(~mask, -torch.inf), -1)
        logp = torch.where(mask, logp, torch.full_like(logp, -torch.inf))  # a dead prefix: all -inf, not NaN
        total = (scores.reshape(M, 1) + logp).reshape(B, nb * K)  # (B, nb * K)
        scores, idx = torch.topk(total, min(beam, nb * K), dim=1)  # (B, nb')
        parent, code = idx // K, idx % K
        prefix = torch.cat([prefix.gather(1, parent[..., None].expand(-1, -1, level)), code[..., None]], 2)
        keys = keys.gather(1, parent) * K + code
    items = torch.where(torch.isfinite(scores), trie.item_of(keys), torch.full_like(keys, -1))
    if items.shape[1] < beam:  # fewer prefixes than the beam can exist in a tiny catalog
        pad = beam - items.shape[1]
        items = torch.cat([items, torch.full((B, pad), -1, dtype=torch.long)], 1)
        scores = torch.cat([scores, torch.full((B, pad), -torch.inf)], 1)
    return items, scores


def top_k_unseen(items: torch.Tensor, seen: list[np.ndarray], k: int) -> np.ndarray:
    """(B, beam) generated rows, each user's seen rows -> (B, k) the first k unseen, -1 padded."""
    return _first_unseen(items, None, seen, k)[0]


def _first_unseen(items: torch.Tensor, scores: torch.Tensor | None, seen: list[np.ndarray], k: int):
    """(B, beam) rows (and their scores) -> (B, k) the first k unseen rows, -1 padded, and
    their scores, -inf padded (None without scores)."""
    items = items.numpy()
    out = np.full((len(items), k), -1, dtype=np.int64)
    out_scores = None if scores is None else np.full((len(items), k), -np.inf, dtype=np.float32)
    for u in range(len(items)):
        keep = np.flatnonzero((items[u] >= 0) & ~np.isin(items[u], seen[u]))[:k]
        out[u, : len(keep)] = items[u][keep]
        if scores is not None:
            out_scores[u, : len(keep)] = scores[u].numpy()[keep]
    return out, out_scores


def generate_unseen(
    model: GenerativeRetriever,
    trie: PrefixTrie,
    hist: torch.Tensor,
    seen: list[np.ndarray],
    k: int,
    beam: int,
    batch: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, L, 4) histories, each user's seen rows -> (B, k) the k best generated items the user
    has not seen and (B, k) their log-probabilities, best first: what serving returns.

    A beam of width w holds w items, some of them seen; a user whose beam held fewer than k
    unseen ones is decoded again with the beam doubled, up to the whole catalog (a beam as wide
    as the catalog holds every item), so a row is short only where the catalog has fewer than k
    items the user has not seen."""
    assert hist.ndim == 3 and len(hist) == len(seen), (hist.shape, len(seen))
    B, n = len(hist), len(trie)
    rows = np.full((B, k), -1, dtype=np.int64)
    scores = np.full((B, k), -np.inf, dtype=np.float32)
    # the most a user can get: k, or the catalog items the user has not seen
    reachable = np.array([min(k, n - len(np.unique(s[(s >= 0) & (s < n)]))) for s in seen])
    todo, width = np.arange(B), min(max(beam, k), max(n, 1))
    while len(todo):
        items, sc = beam_search(model, trie, hist[torch.as_tensor(todo)], width, batch)
        top, top_scores = _first_unseen(items, sc, [seen[u] for u in todo], k)
        done = ((top >= 0).sum(1) >= reachable[todo]) | (width >= n)
        rows[todo[done]], scores[todo[done]] = top[done], top_scores[done]
        todo, width = todo[~done], min(2 * width, n)
    return rows, scores
