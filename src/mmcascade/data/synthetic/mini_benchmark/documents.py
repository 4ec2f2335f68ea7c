"""MiniDocs: catalogue pages drawn here (a ViDoRe-style visual-document task with BEIR files and graded qrels).

Each topic is a coloured shape ("the blue star") with three pages of facts (measurements, history,
whereabouts). A question asks for one fact: the page that states it scores 2, the topic's other pages 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mmcascade.data.synthetic import scenes
from mmcascade.data.synthetic.mini_benchmark.layout import (
    ANNOTATIONS,
    BEIR_FILES,
    METADATA,
    BuildContext,
    DatasetSpec,
    ImageStore,
    write_jsonl,
)

PAGE_SIZE = (192, 256)
PAGE_MARGIN = 10
PAGES_PER_TOPIC = 3
PAGE_FACTS: dict[str, tuple[str, ...]] = {
    "measurements": ("height", "width", "weight"),
    "history": ("year", "maker", "material"),
    "whereabouts": ("room", "city", "price"),
}
FACT_SENTENCES = {
    "height": "{thing} is {height} cm tall.",
    "width": "{thing} is {width} cm wide.",
    "weight": "{thing} weighs {weight} kg.",
    "year": "{thing} was made in {year}.",
    "maker": "{thing} was made by {maker}.",
    "material": "{thing} is made of {material}.",
    "room": "{thing} is kept in room {room}.",
    "city": "{thing} is on show in {city}.",
    "price": "{thing} is insured for {price} euros.",
}
FACT_QUESTIONS = {
    "height": "How tall is {thing}?",
    "width": "How wide is {thing}?",
    "weight": "How much does {thing} weigh?",
    "year": "In which year was {thing} made?",
    "maker": "Who made {thing}?",
    "material": "What material is {thing} made of?",
    "room": "In which room is {thing} kept?",
    "city": "In which city is {thing} on show?",
    "price": "What is {thing} insured for?",
}
MAKERS = ("Ada Brook", "Ben Okafor", "Chen Wei", "Dora Lind", "Emil Novak", "Farah Aziz", "Greta Holm", "Hugo Silva")
MATERIALS = ("oak", "glass", "copper", "clay", "marble", "felt", "steel", "paper")
CITIES = ("Lisbon", "Oslo", "Kyoto", "Lima", "Cairo", "Perth", "Quebec", "Riga")


def documents(context: BuildContext, spec: DatasetSpec) -> dict[str, Any]:
    """MiniDocs: a question -> the catalogue page that answers it, among every page of every topic."""
    rng = context.rng(spec)
    entities = [(colour, shape) for shape in scenes.SHAPES for colour in scenes.COLOURS]
    n_topics = min(len(entities), max(2, round(20 * context.scale)))
    n_queries = min(n_topics * sum(len(facts) for facts in PAGE_FACTS.values()), context.count(spec))
    topics = [entities[int(i)] for i in rng.permutation(len(entities))[:n_topics]]
    store = ImageStore(context.root / spec.image_root)
    corpus, pages_of_topic, facts_of_topic = _draw_pages(topics, rng, store)
    queries, qrels, metadata = _questions(topics, pages_of_topic, facts_of_topic, n_queries)
    corpus.sort(key=lambda row: row["corpus-id"])
    folder = context.root / ANNOTATIONS / spec.name
    for file_name, rows in zip(BEIR_FILES, (queries, corpus, qrels), strict=True):
        write_jsonl(folder / file_name, rows)
    context.write_metadata(spec, metadata)
    return {
        "queries": len(queries),
        "corpus": len(corpus),
        "qrels": len(qrels),
        "qrels_by_score": {
            "2": sum(row["score"] == 2 for row in qrels),
            "1": sum(row["score"] == 1 for row in qrels),
        },
        "topics": n_topics,
        "images": len(store.written),
        "files": [f"{ANNOTATIONS}/{spec.name}/{file_name}" for file_name in BEIR_FILES],
        "metadata": f"{METADATA}/{spec.name}.jsonl",
        "source": f"drawn here: {PAGE_SIZE[0]}x{PAGE_SIZE[1]} catalogue pages with PIL's default font "
        f"(pillow {context.sources.versions['pillow']}), {PAGES_PER_TOPIC} pages per object",
    }


def _draw_pages(
    topics: list[tuple[str, str]], rng: np.random.Generator, store: ImageStore
) -> tuple[list[dict[str, str]], list[list[str]], list[list[tuple[str, str]]]]:
    """The corpus rows, each topic's page ids, and each topic's (fact, page id) pairs in a random order."""
    page_numbers = rng.permutation(len(topics) * PAGES_PER_TOPIC) + 1  # topic pages are not consecutive
    fonts = (_font(15), _font(11))
    corpus, pages_of_topic, facts_of_topic = [], [], []
    for t, (colour, shape) in enumerate(topics):
        values = _fact_values(rng)
        topic_pages, topic_facts = [], []
        for p, (aspect, facts) in enumerate(PAGE_FACTS.items()):
            corpus_id = f"page-{int(page_numbers[t * PAGES_PER_TOPIC + p]):03d}"
            lines = [FACT_SENTENCES[fact].format(thing=f"the {colour} {shape}", **values) for fact in facts]
            lines = [line[0].upper() + line[1:] for line in lines]
            image = _page_image(f"The {colour} {shape}: {aspect}", lines, colour, shape, fonts)
            store.save(image, f"{corpus_id}.png")
            corpus.append({"corpus-id": corpus_id, "image": f"{corpus_id}.png"})
            topic_pages.append(corpus_id)
            topic_facts += [(fact, corpus_id) for fact in facts]
        pages_of_topic.append(topic_pages)
        facts_of_topic.append([topic_facts[int(i)] for i in rng.permutation(len(topic_facts))])
    return corpus, pages_of_topic, facts_of_topic


def _questions(
    topics: list[tuple[str, str]],
    pages_of_topic: list[list[str]],
    facts_of_topic: list[list[tuple[str, str]]],
    n_queries: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """BEIR queries and graded qrels, and our metadata; topics take turns so every object gets questions."""
    queries, qrels, metadata = [], [], []
    depth = 0
    while len(queries) < n_queries:
        for t, (colour, shape) in enumerate(topics):
            if len(queries) == n_queries or depth >= len(facts_of_topic[t]):
                continue
            fact, answer_page = facts_of_topic[t][depth]
            query_id = f"q-{len(queries) + 1:03d}"
            queries.append({"query-id": query_id, "query": FACT_QUESTIONS[fact].format(thing=f"the {colour} {shape}")})
            qrels.append({"query-id": query_id, "corpus-id": answer_page, "score": 2})
            metadata.append({"query-id": query_id, "topic": f"the {colour} {shape}", "fact": fact, "page": answer_page})
            qrels += [
                {"query-id": query_id, "corpus-id": page, "score": 1}
                for page in pages_of_topic[t]
                if page != answer_page
            ]
        depth += 1
    return queries, qrels, metadata


def _fact_values(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "height": int(rng.integers(10, 100)),
        "width": int(rng.integers(10, 100)),
        "weight": int(rng.integers(2, 60)),
        "year": int(rng.integers(1890, 2021)),
        "maker": MAKERS[int(rng.integers(len(MAKERS)))],
        "material": MATERIALS[int(rng.integers(len(MATERIALS)))],
        "room": int(rng.integers(1, 40)),
        "city": CITIES[int(rng.integers(len(CITIES)))],
        "price": int(rng.integers(2, 99)) * 100,
    }


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # a Pillow without FreeType has only the bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _page_image(title: str, facts: list[str], colour: str, shape: str, fonts: tuple[Any, Any]) -> Image.Image:
    """A white catalogue page: a title, a rule, one paragraph per fact and the object's icon."""
    title_font, body_font = fonts
    page = Image.new("RGB", PAGE_SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(page)
    width = PAGE_SIZE[0] - 2 * PAGE_MARGIN
    y = PAGE_MARGIN
    for line in _wrap(draw, title, title_font, width):
        draw.text((PAGE_MARGIN, y), line, fill=(20, 20, 20), font=title_font)
        y += 19
    draw.line((PAGE_MARGIN, y + 2, PAGE_SIZE[0] - PAGE_MARGIN, y + 2), fill=(160, 160, 160), width=1)
    y += 10
    for fact in facts:
        for line in _wrap(draw, fact, body_font, width):
            draw.text((PAGE_MARGIN, y), line, fill=(40, 40, 40), font=body_font)
            y += 14
        y += 6
    _draw_icon(
        draw, shape, scenes.COLOURS[colour], PAGE_SIZE[0] - PAGE_MARGIN - 14, PAGE_SIZE[1] - PAGE_MARGIN - 14, 12
    )
    return page


def _draw_icon(draw: ImageDraw.ImageDraw, shape: str, fill: tuple[int, int, int], cx: int, cy: int, r: int) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        points = 3 if shape == "triangle" else 5
        steps = points if shape == "triangle" else 2 * points
        vertices = []
        for step in range(steps):
            angle = -np.pi / 2 + 2 * np.pi * step / steps
            radius = r if (shape == "triangle" or step % 2 == 0) else r * 0.45
            vertices.append((cx + radius * float(np.cos(angle)), cy + radius * float(np.sin(angle))))
        draw.polygon(vertices, fill=fill)
