"""Champion and challenger: which arm answers a user, and how a challenger is published.

An arm is a loaded snapshot (models/serving/snapshot.py): a checkpoint with its own
item_embeddings and index. The champion's live where they always did; the challenger's below
`artifacts/challenger/`, built for the challenger's version by `publish_challenger` with the
same library calls the item_embeddings / item_index assets make, and the models manifest's
"challenger" (the local mirror of the registry alias `challenger`) is written last, so the
service only ever sees a challenger whose artifacts are whole.

Assignment (`arm_of`) is a stable hash: sha256 of "<challenger version>:<user id>" read as a
number in [0, 1); below `share` the user gets the challenger. A user stays in one arm for the
whole life of a challenger, whichever process or restart answers, and a new challenger draws
its users afresh (a user is not the guinea pig of every experiment). Requests without a user id
(sessions of recent items only) have nothing stable to hash: the champion answers them.

Modes: `split` answers the challenger's share with the challenger; `shadow` answers everyone
with the champion and has the challenger score every request too, its answer logged (not
returned, never an impression).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from models.serving.snapshot import CHALLENGER, CHAMPION


def arm_of(user_id: str | None, share: float, salt: str) -> str:
    """The arm that answers `user_id` while the challenger `salt` takes `share` of users."""
    if user_id is None or share <= 0:
        return CHAMPION
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return CHALLENGER if int.from_bytes(digest[:8], "big") / 2**64 < share else CHAMPION


def publish_challenger(con, artifacts: Path, version: str, spec=None, log=lambda m: None) -> dict:
    """Build the challenger's item_embeddings and index for checkpoint `version` from the
    warehouse `con` (the catalog the assets embed), then mirror it in the models manifest.

    `spec` is the index's IndexSpec (default: the library's; an IVF build is not tuned on user
    vectors here, the item_index asset's `tune` is). Returns what was built. The checkpoint must be trained under the warehouse's vocabulary:
    the service refuses a challenger whose vocabulary differs from the champion's."""
    from models.artifacts import Layout
    from models.index.embeddings import refresh_embeddings, refresh_index
    from models.index.item_index import IndexSpec
    from models.retrieval.checkpoint import load_checkpoint, update_manifest

    layout = Layout(artifacts)
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    model, _, _ = load_checkpoint(layout.models / version, expected_fingerprint=fingerprint)
    own = layout.challenger
    embedded = refresh_embeddings(con, own.embeddings, model, version, fingerprint, log=log)
    index, indexed = refresh_index(own.index, own.embeddings, spec or IndexSpec(), log=log)
    update_manifest(layout.models, challenger=version)
    return {"version": version, "embeddings": embedded, "index": indexed, "items": len(index)}


def retire_challenger(artifacts: Path) -> str | None:
    """Stop serving a challenger (its folders stay for the next one to refresh); returns it."""
    from models.artifacts import Layout
    from models.retrieval.checkpoint import challenger_version, update_manifest

    was = challenger_version(artifacts)
    if was is not None:
        update_manifest(Layout(artifacts).models, challenger=None)
    return was
