"""ETEGRec-style joint training (Liu et al., SIGIR'25): the RQ-VAE tokenizer and the seq2seq
retriever trained in alternation and tied by two alignment losses (no Dagster).

- Alternation: of every `cycle` epochs, the last trains the tokenizer (retriever frozen) and the
  others the retriever (tokenizer frozen). After each tokenizer epoch every item is re-encoded
  (collision tokens renumbered within the tokenizer's collision range, which the retriever's
  vocabulary was built for; the trie rebuilt), so the retriever's next epoch reads the new
  codes. ETEGRec puts the tokenizer epoch first in the cycle and keeps the alignment losses off
  for warm-up epochs; putting it last gets the same effect without a warm-up setting: the first
  tokenizer update already sees a trained retriever.
- Sequence-item alignment (SIA): the encoder's mean state, projected to the tokenizer's latent
  size, and the target item's latent each induce a distribution over every level's codes
  (`RQVAE.code_logits`: softmax of minus the squared distance, residual by residual); the loss is
  the symmetric KL between the two. (ETEGRec's released code takes the log-softmax of the
  distances themselves; we follow the paper's formula.)
- Preference-semantic alignment (PSA): the decoder's first state (the one that predicts c1),
  projected to the item-vector size, against the tokenizer's reconstruction of the target item:
  symmetric in-batch InfoNCE on cosine similarity at temperature 0.07.

Both losses run over the batch's distinct targets, weighted `sia_weight` / `psa_weight` (ETEGRec's
1e-4 / 3e-4). A tokenizer epoch also keeps the RQ-VAE's own loss (reconstruction + quantisation)
on those targets, at learning rate `tokenizer_lr` (ETEGRec's 1e-4), and ends with the RQ-VAE's
dead-code restarts over every item (not in ETEGRec, whose 256-code levels over tens of thousands of
items rarely overload a prefix; on small catalogs a few prefixes otherwise outgrow the collision
token). The two projections are
training-only: the checkpoint keeps the retriever alone, and the tokenizer it was trained with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.generative.semantic_ids import RQVAE, SemanticIds, codes_by_position, tokenize


class JointTokenizer:
    """The tokenizer being trained with the retriever, and the item vectors it encodes.

    item_ids / vectors: every item that needs a code (the item_embeddings table: the catalog and
    any item added since); `catalog` names the rows the retriever trains on."""

    def __init__(self, tokenizer: nn.Module, item_ids, vectors: np.ndarray, catalog):
        if not isinstance(tokenizer, RQVAE):
            raise ValueError(
                "ETEGRec mode trains the tokenizer with the retriever: it needs an RQ-VAE tokenizer "
                f"(item_semantic_ids kind 'rqvae'), got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.vectors = np.array(vectors, dtype=np.float32)  # a writable copy (Parquet gives read-only views)
        self.catalog = catalog
        pos = np.asarray(catalog.index_of(self.item_ids))  # catalog position of each vector's item, -1 = none
        rows = np.full(len(catalog), -1, np.int64)
        rows[pos[pos >= 0]] = np.nonzero(pos >= 0)[0]
        if (rows < 0).any():
            missing = catalog.item_ids[rows < 0]
            raise ValueError(
                f"{len(missing)} catalog items have no item vector (first: {missing[0]!r}): materialize item_embeddings"
            )
        # (N, d) the vector of each catalog position: what a training target's code comes from
        self.by_position = torch.as_tensor(self.vectors[rows])

    @torch.no_grad()
    def restart_dead_codes(self, gen: torch.Generator) -> int:
        """After a tokenizer epoch: codewords no item uses move onto random items' residuals, as
        in the tokenizer's own training (the epoch sees only the batches' targets, and without
        this a few prefixes gather more items than the collision token can number)."""
        tok = self.tokenizer
        x = torch.as_tensor(self.vectors)
        codes, _ = tok.encode(x)
        used = torch.stack(
            [torch.bincount(codes[:, level], minlength=tok.cfg.codebook_size) for level in range(tok.cfg.levels)]
        )
        return tok.restart_dead_codes(x, used, gen)

    def encode(self) -> tuple[SemanticIds, np.ndarray]:
        """Every item's code from the tokenizer as it is now, and the (N + 1, 4) table by catalog
        position (the retriever's view; last row padding)."""
        self.tokenizer.eval()
        sid = tokenize(self.tokenizer, self.item_ids, self.vectors)
        return sid, codes_by_position(self.catalog, sid.item_ids, sid.codes)


class Projections(nn.Module):
    """The two linear maps from the retriever's width to the tokenizer's spaces (training only)."""

    def __init__(self, d_model: int, code_dim: int, vector_dim: int):
        super().__init__()
        self.seq = nn.Linear(d_model, code_dim)  # encoder mean state -> tokenizer latent
        self.pref = nn.Linear(d_model, vector_dim)  # decoder's first state -> item-vector space


def distinct_rows(targets: torch.Tensor) -> torch.Tensor:
    """(B,) target positions -> indices of the first row of each distinct target."""
    uniq, inverse = torch.unique(targets, return_inverse=True)
    first = torch.full((len(uniq),), len(targets), dtype=torch.long)
    return first.scatter_reduce(0, inverse, torch.arange(len(targets)), "amin")


def sequence_item_loss(seq_logits: torch.Tensor, item_logits: torch.Tensor) -> torch.Tensor:
    """Symmetric KL between two (U, levels, K) code-logit tensors, averaged over U x levels."""
    a = F.log_softmax(seq_logits.flatten(0, 1), -1)
    b = F.log_softmax(item_logits.flatten(0, 1), -1)
    return F.kl_div(a, b, reduction="batchmean", log_target=True) + F.kl_div(
        b, a, reduction="batchmean", log_target=True
    )


def preference_semantic_loss(pref: torch.Tensor, recon: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE between (U, d) preference and reconstruction vectors (cosine)."""
    sim = F.normalize(pref, dim=-1) @ F.normalize(recon, dim=-1).T / temperature  # (U, U)
    labels = torch.arange(len(sim))
    return F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)


def alignment_losses(
    tokenizer: RQVAE,
    proj: Projections,
    seq_state: torch.Tensor,
    first_state: torch.Tensor,
    target_vectors: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(SIA, PSA, the RQ-VAE's own loss) for one batch's distinct targets: (U, D) encoder mean
    states, (U, D) decoder first states, (U, d) the targets' item vectors."""
    rq_loss, _, z, recon = tokenizer.loss(target_vectors)
    sia = sequence_item_loss(tokenizer.code_logits(proj.seq(seq_state)), tokenizer.code_logits(z))
    psa = preference_semantic_loss(proj.pref(first_state), recon, temperature)
    return sia, psa, rq_loss
