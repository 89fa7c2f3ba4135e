"""Sentence stimuli for the demo study, generated from templates written for brainhead.

The sentences are built from a small hand-written lexicon and a few syntactic frames, so
that the transformer layers see both lexical variety (shallow layers) and varied
structure (deeper layers). Nothing here is copied from a corpus.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_LEXICON = {
    "agent": [
        "the baker", "a sailor", "the old farmer", "my neighbour", "the young pilot",
        "a tired nurse", "the quiet child", "our teacher", "the clever fox", "a lost dog",
        "the painter", "a curious student", "the tall guard", "her brother", "the mayor",
        "a nervous actor", "the gardener", "a small bird", "the engineer", "his aunt",
    ],
    "verb_t": [
        "carried", "painted", "found", "dropped", "repaired", "followed", "watched",
        "borrowed", "hid", "described", "cleaned", "lifted", "sold", "ignored", "opened",
    ],
    "verb_i": [
        "laughed", "slept", "waited", "shouted", "danced", "hesitated", "vanished",
        "trembled", "smiled", "complained", "wandered", "stumbled",
    ],
    "object": [
        "a heavy box", "the red kite", "an empty bottle", "the broken clock", "a letter",
        "the wooden chair", "a basket of apples", "the silver key", "an old map",
        "the blue umbrella", "a warm blanket", "the garden gate", "a paper boat",
        "the violin", "a pile of books",
    ],
    "place": [
        "in the kitchen", "near the river", "behind the station", "on the roof",
        "under the bridge", "at the market", "inside the museum", "by the harbour",
        "across the field", "in the attic", "beside the lake", "at the bus stop",
    ],
    "time": [
        "after dinner", "before sunrise", "during the storm", "on monday",
        "at midnight", "last winter", "in the afternoon", "every morning",
    ],
    "adverb": [
        "slowly", "quietly", "suddenly", "carefully", "happily", "angrily", "twice",
    ],
}

_FRAMES = [
    "{agent} {verb_t} {object} {place}.",
    "{time}, {agent} {verb_i} {place}.",
    "{agent} {adverb} {verb_t} {object}.",
    "{object} was {verb_t} by {agent} {time}.",
    "when {agent} {verb_i}, {agent2} {verb_t} {object}.",
    "{agent} {verb_i} {adverb} {time}.",
]

#: Conditions alternate between two frame families, so that trial labels are a property
#: of the stimulus (active frames vs. the rest), not of presentation order.
_CONDITION_OF_FRAME = ["active", "intransitive", "active", "passive", "active", "intransitive"]


def make_stimuli(n_stimuli: int, seed: int) -> pd.DataFrame:
    """Generate a table of unique sentence stimuli.

    Parameters
    ----------
    n_stimuli : int
        Number of distinct sentences.
    seed : int
        Seed of the generator; the same seed always gives the same table.

    Returns
    -------
    stimuli : pandas.DataFrame
        Columns ``stim_id`` (``stim-000``...), ``text``, ``frame`` (index of the
        syntactic frame) and ``condition`` (``active``, ``passive`` or
        ``intransitive``), one row per stimulus, in a random order.
    """
    if n_stimuli < 1:
        raise ValueError(f"n_stimuli must be >= 1, got {n_stimuli}")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    rows = []
    attempts = 0
    while len(rows) < n_stimuli:
        attempts += 1
        if attempts > 100 * n_stimuli + 1000:
            raise RuntimeError(
                f"could not generate {n_stimuli} distinct sentences from the lexicon"
            )
        frame = int(rng.integers(len(_FRAMES)))
        words = {key: str(rng.choice(values)) for key, values in _LEXICON.items()}
        words["agent2"] = str(rng.choice(_LEXICON["agent"]))
        text = _FRAMES[frame].format(**words)
        text = text[0].upper() + text[1:]
        if text in seen:
            continue
        seen.add(text)
        rows.append(
            {
                "stim_id": f"stim-{len(rows):03d}",
                "text": text,
                "frame": frame,
                "condition": _CONDITION_OF_FRAME[frame],
            }
        )
    return pd.DataFrame(rows)
