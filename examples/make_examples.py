"""Regenerate the bundled example documents: `python examples/make_examples.py`.

Writes a bar chart, a text page, a photo-like image, a 3-page PDF and a prompts file into
examples/docs/ and examples/prompts.jsonl. Everything is drawn here, so the files are reproducible.
"""

import json
import math
import random
from pathlib import Path

import pymupdf
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
DOCS = HERE / "docs"


def bar_chart(path: Path) -> None:
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    draw.text((150, 10), "Quarterly revenue (M$)", fill="black")
    draw.line((40, 290, 460, 290), fill="black", width=2)
    draw.line((40, 30, 40, 290), fill="black", width=2)
    for i, (label, value) in enumerate([("Q1", 3.1), ("Q2", 3.8), ("Q3", 4.2), ("Q4", 2.9)]):
        x = 70 + i * 100
        draw.rectangle((x, 290 - value * 55, x + 60, 290), fill=(60, 110, 200))
        draw.text((x + 22, 295), label, fill="black")
        draw.text((x + 18, 275 - value * 55), f"{value}", fill="black")
    image.save(path)


def text_page(path: Path) -> None:
    image = Image.new("RGB", (420, 560), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    lines = [
        "MEMORANDUM",
        "",
        "To: Archive team",
        "From: Records office",
        "Date: 3 March 2024",
        "",
        "Subject: retention of scanned invoices",
        "",
        "All invoices scanned after 2019 are kept",
        "for seven years. Older scans move to cold",
        "storage at the end of the quarter.",
    ]
    for i, line in enumerate(lines):
        draw.text((30, 30 + i * 22), line, fill="black")
    image.save(path)


def photo(path: Path) -> None:
    rng = random.Random(7)
    image = Image.new("RGB", (400, 300))
    draw = ImageDraw.Draw(image)
    for y in range(300):  # sky to grass
        t = y / 300
        colour = (int(120 + 80 * t), int(170 + 40 * math.sin(t * 3)), int(230 - 180 * t)) if y < 180 else (60, 140, 50)
        draw.line((0, y, 400, y), fill=colour)
    draw.ellipse((300, 30, 350, 80), fill=(255, 230, 120))
    for _ in range(40):
        x, y = rng.randint(0, 400), rng.randint(180, 300)
        draw.ellipse((x, y, x + 6, y + 6), fill=(rng.randint(180, 255), rng.randint(50, 200), 60))
    draw.rectangle((120, 130, 200, 200), fill=(150, 80, 60))
    draw.polygon([(110, 130), (160, 90), (210, 130)], fill=(110, 40, 40))
    image.filter(ImageFilter.GaussianBlur(1)).save(path, quality=90)


def report_pdf(path: Path) -> None:
    document = pymupdf.open()
    pages = [
        ("Annual report 2023", "Revenue grew 12% to 14.1 M$.\nHeadcount: 48 people."),
        ("Operations", "Two new warehouses opened in Q2.\nShipping time fell from 5 to 3 days."),
        ("Outlook", "We expect flat revenue in 2024\nand a focus on margins."),
    ]
    for title, body in pages:
        page = document.new_page(width=420, height=595)
        page.insert_text((50, 80), title, fontsize=20)
        page.insert_text((50, 130), body, fontsize=12)
    document.save(path)


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    bar_chart(DOCS / "chart.png")
    text_page(DOCS / "memo.png")
    photo(DOCS / "garden.jpg")
    report_pdf(DOCS / "report.pdf")
    prompts = [
        {"id": "describe", "prompt": "Describe this page in one sentence."},
        {"id": "q3", "prompt": "What was the revenue in Q3?", "file": "chart.png"},
        {"id": "growth", "prompt": "How much did revenue grow?", "file": "report.pdf", "pages": "1"},
    ]
    (HERE / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))


if __name__ == "__main__":
    main()
