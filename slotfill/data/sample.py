"""A seeded generator of restaurant-booking utterances: the embedded sample data set.

The sample exists so that ``slotfill`` can be tried and tested without
downloading anything: a model trained on the 2,000 training sentences for under
a minute should tag held-out sentences well. Held-out means more than "another
random draw": every slot's filler values are split into a training pool and two
held-out pools, and the valid and test splits draw half of their slot values
from their own held-out pool (values the training split never contains), so a
good test score needs generalisation from context, not memorised values.

Slots: cuisine, party_size, date, time, location, restaurant_name, price_range.
Intents: book_table, find_restaurant, cancel_booking, change_booking,
ask_opening_hours, get_directions.

Conventions (what the tags mean):

- Prepositions and connectives stay outside slots: ``for [four]``,
  ``for a party of [6]``, ``at [7pm]``, ``on [friday]``, ``in [boston]``.
- Units belong to the value: ``[four people]``, ``[7 pm]``, ``[half past eight]``.
- Output is lower-cased and tokenised exactly as :func:`slotfill.text.tokenizer.tokenize`
  does with the default :class:`~slotfill.text.tokenizer.TokenizerConfig`.

``python -m slotfill.data.sample --out slotfill/resources/sample`` writes the
folder-format splits that ship with the package; a test checks that the shipped
files are byte-identical to this generator's output.
"""

from __future__ import annotations

import argparse
import random
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

from slotfill.data.example import Example
from slotfill.schemes import tags_from_spans

SLOTS = ("cuisine", "party_size", "date", "time", "location", "restaurant_name", "price_range")
INTENTS = (
    "book_table",
    "find_restaurant",
    "cancel_booking",
    "change_booking",
    "ask_opening_hours",
    "get_directions",
)
DEFAULT_SEED = 20240611
DEFAULT_SIZES = {"train": 2000, "valid": 300, "test": 300}
# Probability that a valid/test slot value comes from the split's held-out pool.
HELD_OUT_RATE = 0.5

# ----------------------------------------------------------------------------- fillers
# Hand-written lists: the held-out values are listed separately so a reviewer can
# see that they are plausible in the same contexts (new names, new cities, new
# cuisines), which is what makes the held-out test meaningful.

_CUISINE_TRAIN = (
    "italian", "mexican", "chinese", "japanese", "thai", "indian", "french", "greek", "korean",
    "vietnamese", "spanish", "lebanese", "ethiopian", "turkish", "american", "sushi", "pizza",
    "seafood", "vegetarian", "vegan", "barbecue", "middle eastern", "dim sum", "ramen", "tapas",
    "burger", "steak", "noodle",
)  # fmt: skip
_CUISINE_HELD = ("peruvian", "moroccan", "german", "brazilian", "persian", "sri lankan", "cuban", "hot pot")

_LOCATION_TRAIN = (
    "san francisco", "new york", "chicago", "boston", "seattle", "austin", "denver", "portland",
    "los angeles", "san diego", "downtown", "midtown", "the mission district", "brooklyn", "soho",
    "union square", "the waterfront", "the city center", "north beach", "chinatown", "little italy",
    "the financial district", "main street", "oak street", "the train station", "harvard square",
    "capitol hill", "the east side", "my hotel", "the convention center",
)  # fmt: skip
_LOCATION_HELD = (
    "san jose", "philadelphia", "new orleans", "pasadena", "the west end", "queens",
    "fisherman's wharf", "pike place", "the old town", "elm street",
)  # fmt: skip

_RESTAURANT_TRAIN = (
    "the golden dragon", "luigi's", "chez pierre", "blue ginger", "the red lantern", "casa lupita",
    "sakura house", "the copper kettle", "bella napoli", "the spice route", "el toro", "the rusty anchor",
    "green leaf cafe", "the noodle bar", "taj palace", "le petit bistro", "the harbor grill",
    "mama rosa's", "the blue door", "pho saigon", "seoul kitchen", "the smokehouse", "athena taverna",
    "the corner table", "little tokyo", "the olive tree",
)  # fmt: skip
_RESTAURANT_HELD = (
    "the silver spoon", "trattoria marco", "the jade garden", "bombay bistro", "la paloma",
    "the hungry fox", "osteria luca", "the lantern room",
)  # fmt: skip

_PRICE_TRAIN = (
    "cheap", "inexpensive", "affordable", "moderately priced", "mid-range", "expensive", "fancy",
    "upscale", "high end", "budget", "pricey", "reasonably priced",
)  # fmt: skip
_PRICE_HELD = ("economical", "luxury", "low cost", "posh")

_NUMBER_WORDS = (
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
)  # fmt: skip
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _party_values() -> list[str]:
    values = []
    for n in range(2, 13):
        word = _NUMBER_WORDS[n - 1]
        values += [word, str(n), f"{word} people", f"{n} people", f"{word} guests", f"{n} guests"]
    return values + ["one", "1", "one person"]


def _date_values() -> list[tuple[str, str]]:
    """(preposition, value) pairs; the preposition is an O word, "" if none."""
    values = [("", v) for v in (
        "today", "tonight", "tomorrow", "tomorrow night", "tomorrow evening", "this evening",
        "this weekend", "next weekend", "the day after tomorrow", "christmas eve", "new year's eve",
    )]  # fmt: skip
    for day in _WEEKDAYS:
        values += [("on", day), ("", f"this {day}"), ("", f"next {day}"), ("on", f"{day} night")]
    for i, month in enumerate(_MONTHS):
        for day in (1, 3, 5 + i, 12, 14 + i % 5, 20, 22, 28):
            values.append(("on", f"{month} {_ordinal(day)}"))
    for day in (1, 2, 3, 4, 5, 8, 10, 12, 15, 18, 21, 23, 25, 30):
        values.append(("on", f"the {_ordinal(day)}"))
    return values


def _time_values() -> list[str]:
    values = ["noon", "midnight", "lunchtime"]
    for h in range(1, 13):
        w = _NUMBER_WORDS[h - 1]
        values += [
            f"{h}pm", f"{h} pm", f"{h} p.m.", f"{h}:30", f"{h}:15", f"{h}:45 pm", f"{h}:30 pm",
            w, f"{w} thirty", f"{w} fifteen", f"half past {w}", f"quarter past {w}", f"quarter to {w}",
            f"{w} o'clock", f"{h} o'clock", f"{w} in the evening",
        ]  # fmt: skip
        if h in (11, 12, 1):
            values += [f"{h}am", f"{h} am"]
    return values


# Values the product brief's example needs in training ("book a table for four
# at an italian place tomorrow at 7pm"); never held out.
_PINNED = frozenset({"four", "tomorrow", "7pm", "7 pm", "italian", "8 pm", "friday", "tonight"})


def _split_pool(values: Sequence, key=lambda v: v) -> dict[str, tuple]:
    """Deterministically hold out about 1/8 of ``values`` for valid and 1/8 for test.

    crc32 (not ``hash()``, which is salted per process) keeps the split stable.
    """
    pools: dict[str, list] = {"train": [], "valid": [], "test": []}
    for value in values:
        bucket = zlib.crc32(key(value).encode("utf-8")) % 8
        if key(value) in _PINNED or bucket > 1:
            pools["train"].append(value)
        else:
            pools["valid" if bucket == 0 else "test"].append(value)
    return {name: tuple(pool) for name, pool in pools.items()}


def _hand_pool(train: Sequence[str], held: Sequence[str]) -> dict[str, tuple]:
    # Alternate held-out values between valid and test so test values stay unseen by both.
    return {"train": tuple(train), "valid": tuple(held[0::2]), "test": tuple(held[1::2])}


# Each pool entry is a (preposition, value) pair so fillers can carry the O word
# that must precede them ("on friday" but "tomorrow").
def _no_prep(pool: dict[str, tuple]) -> dict[str, tuple]:
    return {name: tuple(("", v) for v in values) for name, values in pool.items()}


POOLS: dict[str, dict[str, tuple[tuple[str, str], ...]]] = {
    "cuisine": _no_prep(_hand_pool(_CUISINE_TRAIN, _CUISINE_HELD)),
    "location": _no_prep(_hand_pool(_LOCATION_TRAIN, _LOCATION_HELD)),
    "restaurant_name": _no_prep(_hand_pool(_RESTAURANT_TRAIN, _RESTAURANT_HELD)),
    "price_range": _no_prep(_hand_pool(_PRICE_TRAIN, _PRICE_HELD)),
    "party_size": _no_prep(_split_pool(_party_values())),
    "date": _split_pool(_date_values(), key=lambda pv: pv[1]),
    "time": _no_prep(_split_pool(_time_values())),
}

# ----------------------------------------------------------------------------- templates
# Placeholders: {slot} or {slot?} (optional, used half of the time). Slot names
# are short aliases, see _PLACEHOLDERS. Templates use "a"; "an" is chosen from
# the following word. No punctuation: outputs must survive the tokeniser unchanged.

_PLACEHOLDERS = {
    "cuisine": "cuisine",
    "location": "location",
    "restaurant": "restaurant_name",
    "price": "price_range",
    "party": "party_size",  # "for [four]", "for a party of [6]"
    "party_n": "party_size",  # bare "[four]"
    "date": "date",  # with its preposition: "on [friday]", "[tomorrow]"
    "date_np": "date",  # bare: "move it to [friday]"
    "time": "time",  # "at [7pm]", "around [8 pm]"
    "time_np": "time",  # bare: "change it to [8 pm]"
    "time_np2": "time",
}

TEMPLATES: dict[str, tuple[str, ...]] = {
    "book_table": (
        "book a table {party} at a {cuisine} place {date} {time}",
        "book a table {party} {date} {time}",
        "i'd like to reserve a table {party} at {restaurant} {date?}",
        "can you book {restaurant} {party} {time}",
        "reserve a table at {restaurant} {date} {time} {party?}",
        "i need a table {party} {time} {date?}",
        "make a reservation at {restaurant} {date} {time}",
        "get us a table at a {price} {cuisine} restaurant in {location} {date?}",
        "please book a {cuisine} restaurant in {location} {party} {time?}",
        "we'd like a table {party} at {restaurant} in {location}",
        "reserve {restaurant} {date} {party}",
        "book me a table at {restaurant} {time}",
        "table {party} {date} {time} please",
        "can i get a reservation {party} at a {cuisine} place in {location} {date?}",
        "could you reserve a table {party} somewhere {price} {date} {time?}",
        "i want to book dinner {party} at {restaurant} {date} {time}",
        "book a table at {restaurant} in {location} {date} {time} {party}",
        "there will be {party_n} of us {date} {time} at {restaurant}",
        "we are {party_n} and want a table at {restaurant} {date?}",
        "please make a booking {party} at a {price} place {date} {time?}",
    ),
    "find_restaurant": (
        "find a {cuisine} restaurant in {location}",
        "find me a {price} {cuisine} place near {location}",
        "are there any {cuisine} restaurants in {location}",
        "show me {price} restaurants in {location}",
        "where can i get {cuisine} food near {location}",
        "i'm looking for a {price} place to eat in {location}",
        "recommend a good {cuisine} restaurant in {location}",
        "any {cuisine} places open {date} {time?} near {location}",
        "what's a good {price} {cuisine} spot in {location}",
        "search for {cuisine} restaurants near {location} that can seat {party_n}",
        "find a restaurant in {location} with a table {party} {date?}",
        "i want {cuisine} food {date}",
        "suggest somewhere {price} for {cuisine} in {location}",
        "list {cuisine} restaurants around {location}",
        "is there a {cuisine} place in {location} that is open {time}",
        "where is the best {cuisine} in {location}",
    ),
    "cancel_booking": (
        "cancel my reservation at {restaurant}",
        "cancel my booking {date} {time?}",
        "please cancel the table {party} at {restaurant} {date?}",
        "i need to cancel my reservation at {restaurant} {date} {time?}",
        "cancel the {time_np} booking at {restaurant}",
        "we can't make it to {restaurant} {date} please cancel",
        "call off our dinner at {restaurant} {date}",
        "drop my reservation {date} {time}",
        "scrap the booking {party} {date}",
        "cancel the reservation {party} {date} {time} at {restaurant}",
    ),
    "change_booking": (
        "move my reservation at {restaurant} to {date_np}",
        "change my booking to {time_np}",
        "can i change the reservation {date} to {time_np}",
        "reschedule my table at {restaurant} to {date_np} {time?}",
        "push my reservation back to {time_np}",
        "change the party size to {party_n} for my booking at {restaurant}",
        "make my reservation {date} {party} instead",
        "we are now {party_n} for {restaurant} {date?}",
        "can we move our table at {restaurant} from {time_np} to {time_np2}",
        "update my booking at {restaurant} to {date_np} at {time_np}",
    ),
    "ask_opening_hours": (
        "when does {restaurant} open {date?}",
        "what time does {restaurant} close {date?}",
        "is {restaurant} open {date}",
        "is {restaurant} open {date} {time}",
        "what are the opening hours of {restaurant} in {location}",
        "how late is {restaurant} open {date?}",
        "are {cuisine} places in {location} open {time}",
        "until what time is {restaurant} open {date}",
        "what are the hours for {restaurant} {date?}",
    ),
    "get_directions": (
        "how do i get to {restaurant}",
        "directions to {restaurant} from {location}",
        "where is {restaurant} located",
        "how far is {restaurant} from {location}",
        "show me the way to {restaurant} in {location}",
        "what's the address of {restaurant}",
        "navigate to {restaurant} near {location}",
    ),
}

# How often each intent is drawn (bookings dominate, as in real traffic).
INTENT_WEIGHTS = {
    "book_table": 30,
    "find_restaurant": 25,
    "cancel_booking": 12,
    "change_booking": 13,
    "ask_opening_hours": 12,
    "get_directions": 8,
}

_PLACEHOLDER = re.compile(r"\{(\w+)(\??)\}")
_PARTY_PREPS = ("for", "for", "for", "for a party of", "for a group of")
_TIME_PREPS = ("at", "at", "at", "around", "by")


def _pick_value(rng: random.Random, slot: str, split: str) -> tuple[str, str]:
    pools = POOLS[slot]
    if split != "train" and pools[split] and rng.random() < HELD_OUT_RATE:
        return rng.choice(pools[split])
    return rng.choice(pools["train"])


def fill(template: str, values: dict[str, str], intent: str | None = None, source: str | None = None) -> Example:
    """Render ``template`` with explicit ``values`` (keyed by placeholder name).

    Each value is ``"value"`` or ``"prep [value]"`` where the words before the
    brackets are O words (``"for [four]"``, ``"at [7pm]"``). A missing optional
    placeholder is dropped.
    """
    tokens: list[str] = []
    tags: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[position : match.start()].split()
        tokens += literal
        tags += ["O"] * len(literal)
        position = match.end()
        name, optional = match.group(1), match.group(2)
        if name not in values:
            if optional:
                continue
            raise KeyError(f"no value for placeholder {name!r} in {template!r}")
        raw = values[name]
        prep, bracket, rest = raw.partition("[")
        value_text = rest.rstrip("]") if bracket else prep
        prep_words = prep.split() if bracket else []
        value_words = value_text.split()
        slot = _PLACEHOLDERS[name]
        tokens += prep_words + value_words
        tags += ["O"] * len(prep_words) + tags_from_spans(len(value_words), [(slot, 0, len(value_words))], "IOB2")
    literal = template[position:].split()
    tokens += literal
    tags += ["O"] * len(literal)
    # "a" -> "an" before a vowel sound (good enough for the words used here).
    for i, token in enumerate(tokens[:-1]):
        if token in ("a", "an") and tags[i] == "O":
            following = tokens[i + 1]
            tokens[i] = "an" if following[0] in "aeiou" and not following.startswith(("uni", "eu")) else "a"
    return Example(tuple(tokens), tuple(tags), intent, source)


def _sample_one(rng: random.Random, split: str) -> Example:
    intents = list(INTENT_WEIGHTS)
    intent = rng.choices(intents, weights=[INTENT_WEIGHTS[i] for i in intents])[0]
    template = rng.choice(TEMPLATES[intent])
    values: dict[str, str] = {}
    for match in _PLACEHOLDER.finditer(template):
        name, optional = match.group(1), match.group(2)
        if optional and rng.random() < 0.5:
            continue
        slot = _PLACEHOLDERS[name]
        prep, value = _pick_value(rng, slot, split)
        if name == "party":
            prep = rng.choice(_PARTY_PREPS)
        elif name == "time":
            prep = rng.choice(_TIME_PREPS)
        elif name.endswith("_np") or name.endswith("_np2") or name == "party_n":
            prep = ""
        values[name] = f"{prep} [{value}]" if prep else f"[{value}]"
    return fill(template, values, intent)


def generate(n: int, seed: int, split: str = "train", exclude: frozenset[str] = frozenset()) -> list[Example]:
    """``n`` distinct examples, deterministic for ``(seed, split)``.

    ``split`` chooses the filler pools: "train" uses training values only; "valid"
    and "test" take each slot value from their own held-out pool with probability
    :data:`HELD_OUT_RATE`. Sentences whose text is in ``exclude`` are skipped
    (used to keep valid/test sentences out of train).
    """
    if split not in DEFAULT_SIZES:
        raise ValueError(f"split must be one of {', '.join(DEFAULT_SIZES)}, got {split!r}")
    rng = random.Random(seed * 10 + list(DEFAULT_SIZES).index(split))  # independent stream per split
    seen = set(exclude)
    examples: list[Example] = []
    attempts = 0
    while len(examples) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not generate {n} distinct examples (got {len(examples)})")
        example = _sample_one(rng, split)
        if example.text in seen:
            continue
        seen.add(example.text)
        examples.append(
            Example(example.tokens, example.tags, example.intent, f"sample:{split}:{len(examples) + 1}")
        )
    return examples


def generate_splits(seed: int = DEFAULT_SEED, sizes: dict[str, int] | None = None) -> dict[str, list[Example]]:
    """The train/valid/test splits; no sentence appears in two splits."""
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    out: dict[str, list[Example]] = {}
    used: set[str] = set()
    for split in DEFAULT_SIZES:
        out[split] = generate(sizes[split], seed, split, exclude=frozenset(used))
        used.update(example.text for example in out[split])
    return out


def sample_data_dir() -> Path:
    """The packaged sample data (folder format: ``train/ valid/ test/``)."""
    return Path(__file__).resolve().parent.parent / "resources" / "sample"


def sample_recipe() -> Path:
    """Training settings suited to the sample's size (``slotfill train --data sample --config sample``):
    the default architecture, fewer epochs and one torch thread, so the quickstart trains in well under
    two minutes on two cores."""
    return sample_data_dir() / "recipe.json"


def write_sample(out_dir: str | Path, seed: int = DEFAULT_SEED, sizes: dict[str, int] | None = None) -> None:
    from slotfill.data.readers import write_folder_split  # local: readers import nothing from here

    for split, examples in generate_splits(seed, sizes).items():
        write_folder_split(examples, Path(out_dir) / split)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slotfill.data.sample", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder to write train/ valid/ test/ into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    for split, size in DEFAULT_SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=size, help=f"examples in {split} (default {size})")
    args = parser.parse_args(argv)
    sizes = {split: getattr(args, split) for split in DEFAULT_SIZES}
    write_sample(args.out, args.seed, sizes)
    print(f"wrote {', '.join(f'{n} {s}' for s, n in sizes.items())} examples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
