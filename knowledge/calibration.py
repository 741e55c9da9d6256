"""A similarity threshold calibrated for each store, so off-topic comments get no passages.

One fixed threshold does not travel between corpora: 0.30 kept "great video" away from the
sample articles, but on a real blog "The audio is a bit quiet in this one" retrieved a passage at
0.32. So at ingest every store is scored against a fixed set of generic comments that no article
should answer (praise, thanks, questions about the video or the person), and the threshold is
set just above the best match any of them gets: `max(default, best + margin)`, capped so a
corpus about, say, microphones cannot push it above what real questions reach.
"""

from __future__ import annotations

from typing import Callable, Sequence

MARGIN = 0.02
CAP = 0.45

# Comments every channel gets and no article answers. Kept generic: nothing about a topic.
GENERIC_OFF_TOPIC = (
    "great video!", "Great content, thank you!", "first!", "second", "love your channel",
    "This channel is a gift", "thanks so much, this helped a lot", "you explain things so clearly",
    "subscribed!", "keep up the good work", "amazing as always", "can't wait for the next one",
    "The audio is a bit quiet in this one", "the music is too loud", "what mic do you use?",
    "what camera do you use?", "what keyboard is that?", "what's your editor theme?",
    "your font is too small on mobile", "the thumbnail is misleading", "love the new intro",
    "where are you from?", "how old are you?", "do a face reveal", "nice shirt",
    "your cat is adorable", "who else is watching this at 3am?", "the video cuts out at the end",
    "please make more videos", "can you do a collab with someone?", "hello from Brazil!",
    "notification squad", "lol", "I watched this twice", "this is underrated",
    "happy new year!", "you should do a livestream", "can you review my resume?",
    "how do you edit your videos?", "what time is it there?",
)


# Videos every channel posts that no article is about: their titles must link to no article
# (knowledge/video_links.py), so the link threshold is set above the best article they reach.
GENERIC_VIDEO_TITLES = (
    "Q&A livestream", "Channel update", "My desk setup tour", "100k subscribers special", "Bloopers",
    "A day in my life", "Answering your questions", "What I'm working on this month", "Year in review",
    "Behind the scenes", "Trailer", "Live coding stream", "My favourite books this year",
    "Studio tour and gear", "Unboxing my new laptop", "Vlog: conference week", "Ask me anything",
    "Thank you for 10,000 subscribers", "Reacting to your comments", "Shorts compilation",
)
LINK_MARGIN = 0.05
LINK_CAP = 0.6


def calibrated_threshold(best_similarities: Sequence[float], default: float) -> float:
    """The threshold for a store whose best matches to the generic comments are given."""
    if not best_similarities:
        return default
    return round(min(CAP, max(default, max(best_similarities) + MARGIN)), 4)


def calibrated_link_threshold(best_similarities: Sequence[float], default: float) -> float:
    """The video-title link threshold for a store whose best matches to the generic titles are given."""
    if not best_similarities:
        return default
    return round(min(LINK_CAP, max(default, max(best_similarities) + LINK_MARGIN)), 4)


def calibrate(best_match: Callable[[Sequence[str]], list[float]], default: float) -> tuple[float, float]:
    """(threshold, best generic similarity) for a store, given a function that scores comments
    against it (the best passage similarity of each)."""
    scores = best_match(GENERIC_OFF_TOPIC)
    return calibrated_threshold(scores, default), round(max(scores, default=0.0), 4)
