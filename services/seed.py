"""The deterministic demo data set: tracks, artists, albums and playlists.

Pure (no I/O): the same (seed, sizes) always give the same rows, so the playlist,
metadata and search services, each seeding its own database, agree on every id.
Ids are `trk-NNNNNN` and `pl-NNNNN`; owners are `user-NNNN`. Playlist popularity
(which ids the load generator asks for) follows a Zipf-like law, as real traffic does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_SEED = 2014
DEFAULT_TRACKS = 50_000
DEFAULT_PLAYLISTS = 5_000


def _words(text: str) -> list[str]:
    return text.split()


_ADJ = _words(
    "blue golden silent electric broken wild lonely midnight northern burning quiet lost "
    "velvet neon paper hollow crystal distant frozen summer winter restless sweet bitter "
    "secret endless silver fading dancing falling rising open empty heavy gentle sacred "
    "hidden crimson"
)
_NOUN = _words(
    "river heart city dream light road fire rain ocean sky garden mirror shadow echo "
    "morning highway window forest island letter machine signal harbor winter season "
    "thunder ghost horizon memory island satellite balloon station lantern mountain "
    "desert tide feather engine anthem canyon circus diamond empire frontier galaxy "
    "glacier jungle kingdom lullaby meadow orbit parade planet rocket storm temple "
    "valley voyage whisper"
)
_FIRST = _words(
    "anna erik lars sofia maja oskar liam emma noah ella hugo alva felix ines ada "
    "jonas karin nils sara tove viktor linnea axel freja otto elsa malte signe ivar "
    "astrid bruno cleo dora edvin greta hedda ida jens"
)
_LAST = _words(
    "berg lund strand holm dahl ek sjo falk nyberg wall frost moreau silva okafor "
    "tanaka novak kowalski rossi schmidt jensen hansen larsen virtanen costa murphy "
    "walsh hughes price bell ward"
)
_GENRE = _words("mixtape workout chill focus party roadtrip sleep classics throwbacks hits")


@dataclass(frozen=True)
class TrackRow:
    id: str
    title: str
    artist: str
    album: str
    duration_ms: int


@dataclass(frozen=True)
class PlaylistRow:
    id: str
    name: str
    owner: str
    track_ids: tuple[str, ...]


def track_id(i: int) -> str:
    return f"trk-{i:06d}"


def playlist_id(i: int) -> str:
    return f"pl-{i:05d}"


def _cap(words: list[str]) -> str:
    return " ".join(w.capitalize() for w in words)


def artists(rng: random.Random, n: int) -> list[str]:
    names = set()
    out = []
    while len(out) < n:
        if rng.random() < 0.3:
            name = f"The {_cap([rng.choice(_ADJ), rng.choice(_NOUN)])}s"
        else:
            name = _cap([rng.choice(_FIRST), rng.choice(_LAST)])
        if name not in names:
            names.add(name)
            out.append(name)
        elif len(names) > 1500:  # the word lists run dry: number the rest
            name = f"{name} {len(out)}"
            names.add(name)
            out.append(name)
    return out


def tracks(n: int = DEFAULT_TRACKS, seed: int = DEFAULT_SEED) -> Iterator[TrackRow]:
    """n tracks in id order; about 12 tracks per album and 3 albums per artist."""
    rng = random.Random(seed)
    pool = artists(rng, max(1, n // 36))
    album = ""
    artist = pool[0]
    for i in range(1, n + 1):
        if (i - 1) % 12 == 0:
            artist = pool[((i - 1) // 36) % len(pool)]
            album = _cap([rng.choice(_ADJ), rng.choice(_NOUN)])
        shape = rng.random()
        if shape < 0.5:
            title = _cap([rng.choice(_ADJ), rng.choice(_NOUN)])
        elif shape < 0.8:
            title = f"{_cap([rng.choice(_NOUN)])} of the {_cap([rng.choice(_NOUN)])}"
        else:
            title = _cap([rng.choice(_NOUN)])
        yield TrackRow(track_id(i), title, artist, album, rng.randint(95_000, 420_000))


def playlists(
    n: int = DEFAULT_PLAYLISTS, n_tracks: int = DEFAULT_TRACKS, seed: int = DEFAULT_SEED
) -> Iterator[PlaylistRow]:
    """n playlists of 5..80 tracks (mean ~30) from a catalogue of n_tracks."""
    rng = random.Random(seed + 1)
    owners = max(1, n // 10)
    for i in range(1, n + 1):
        size = min(80, max(5, int(rng.expovariate(1 / 30))))
        size = min(size, n_tracks)
        picks = rng.sample(range(1, n_tracks + 1), size)
        name = f"{_cap([rng.choice(_ADJ)])} {rng.choice(_GENRE)}"
        owner = f"user-{rng.randrange(1, owners + 1):04d}"
        yield PlaylistRow(playlist_id(i), name, owner, tuple(track_id(t) for t in picks))


def search_words() -> list[str]:
    """Words that occur in titles and artists: the load generator's query vocabulary."""
    return [*_ADJ, *_NOUN, *_FIRST, *_LAST]


class Popularity:
    """Zipf-like choice of 1..n (s=1.1): a few playlists get most of the traffic."""

    def __init__(self, n: int, s: float = 1.1) -> None:
        weights = [1.0 / (k**s) for k in range(1, n + 1)]
        self._cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self._cum.append(total)
        self._order = list(range(1, n + 1))
        random.Random(n).shuffle(self._order)  # popular ids spread over the id space

    def pick(self, rng: random.Random) -> int:
        return rng.choices(self._order, cum_weights=self._cum, k=1)[0]
