"""Write the benchmark chat file: single-turn chats whose replies range from a few words to pages.

The replies are built from a fixed pool of plain English sentences with a seeded generator, so the
file is the same on every machine and needs no download. The reply lengths follow the mix seen in
real instruction data: many one-liners, a body of paragraph answers and a tail of long ones that
reach ``--max-length``. Every row has one system, one user and one assistant message, so the chat
format (this project, HF) and TRL's prompt/completion format train on exactly the same tokens.

    python benchmarks/make_chat_data.py --out benchmarks/data/chat_mixed.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYSTEM = "You are a helpful assistant. Answer clearly and stay on topic."

TOPICS = [
    "how a bicycle gear works", "why the sky is blue", "sourdough bread", "the water cycle",
    "Python list comprehensions", "compound interest", "how vaccines train the immune system",
    "the causes of the French Revolution", "writing a cover letter", "container gardening",
    "how a refrigerator cools food", "the rules of chess castling", "learning a second language",
    "binary search", "why leaves change colour", "planning a week of meals", "how tides work",
    "the difference between weather and climate", "setting up a home network", "photosynthesis",
]

QUESTIONS = [
    "Can you explain {t}?", "What should a beginner know about {t}?", "Give me a short note on {t}.",
    "I keep getting confused about {t}. Help?", "Summarise {t} in plain words.",
    "Write a detailed guide to {t}.", "Quick question: {t} in one line?",
]

SENTENCES = [
    "The short answer is that it depends on a few simple parts working together.",
    "Start with the idea that energy moves from where there is more of it to where there is less.",
    "Most people find it easier once they see a concrete example rather than a definition.",
    "A useful way to think about it is as a loop that repeats until nothing changes.",
    "The first step is to gather what you need and set it out before you begin.",
    "If something goes wrong, check the simplest explanation before the clever one.",
    "Historians still argue about how much each cause mattered, but several stand out.",
    "In practice you will rarely need the exact numbers; the pattern is what counts.",
    "Small and regular effort beats an occasional long session almost every time.",
    "Keep a note of what you tried, because the same question tends to come back later.",
    "The main trade-off is between speed and how much you can control the result.",
    "Try it once by hand, then automate the part you repeated most.",
    "The key quantity grows a little each period, and the growth itself grows too.",
    "Sunlight is split into colours, and the shorter wavelengths scatter far more in air.",
    "A cold surface draws heat out of the air around it, and a pump moves that heat outside.",
    "The list is built in one expression, which reads like the sentence describing it.",
    "Each comparison halves the range that can still contain the value you want.",
    "Plants take in carbon dioxide and water and use light to turn them into sugar.",
    "The moon pulls on the oceans, and the Earth turning under that bulge makes the tide.",
    "Weather is what happens this afternoon, while climate is the pattern over decades.",
    "Choose containers with drainage holes and a mix that holds water without staying soggy.",
    "Open with the role you want, then show in two or three lines why you fit it.",
    "Your router hands out addresses, and the modem connects that small network to the world.",
    "The body learns the shape of a harmless piece of the germ and remembers it for later.",
    "Bread rises because yeast and bacteria release gas that the gluten network traps.",
    "Castling moves the king two squares toward a rook, which then jumps to the other side.",
    "A larger front gear and a smaller rear gear make each turn of the pedals go further.",
    "Green pigment breaks down in autumn, revealing yellow and orange that were there all along.",
    "Plan meals around what you already have, then write one list for the whole week.",
    "Speaking from the first day, even badly, does more than months of silent reading.",
    "There are exceptions, and it is worth knowing the two or three that come up often.",
    "To check your understanding, try explaining it to a friend without notes.",
    "Write down the goal in one sentence before you look for a method.",
    "It can feel slow at first, but the second and third attempts go much faster.",
    "Be careful with edge cases such as empty inputs, very large values and repeated items.",
    "When in doubt, measure instead of guessing, and change one thing at a time.",
]

# (share of rows, min sentences, max sentences): one-liners, paragraphs, long answers.
LENGTH_MIX = [(0.35, 1, 1), (0.40, 2, 6), (0.17, 8, 16), (0.08, 20, 40)]


def _reply_sentences(rng: random.Random) -> int:
    roll, total = rng.random(), 0.0
    for share, low, high in LENGTH_MIX:
        total += share
        if roll < total:
            return rng.randint(low, high)
    return LENGTH_MIX[-1][2]


def make_row(rng: random.Random) -> dict:
    """One chat row: system, user question about a topic, assistant reply of random length."""
    topic = rng.choice(TOPICS)
    question = rng.choice(QUESTIONS).format(t=topic)
    reply = " ".join(rng.choice(SENTENCES) for _ in range(_reply_sentences(rng)))
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": reply},
        ]
    }


def main() -> None:
    """Write ``--rows`` rows to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data/chat_mixed.jsonl"))
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for _ in range(args.rows):
            handle.write(json.dumps(make_row(rng)) + "\n")


if __name__ == "__main__":
    main()
