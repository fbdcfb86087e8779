"""Input pipeline benchmark: render + preprocess throughput, and host memory over a long run.

Generates PDFs (text, vector shapes and one embedded photo per page) in a temporary folder, then, through
the batch layer's public input API (``mova.batch.read_pages`` / ``find_pages``):

1. throughput (pages/s) of ``read_pages`` with 1 reader process and with the default count, counted
   after the first ``workers`` pages (the readers' start-up: spawning, importing pymupdf), plus a
   thread-pool baseline (``unit.load()`` and preprocess in threads of one process) for comparison;
2. resident memory (this process, and this process plus its readers) sampled while 2,000 pages stream
   through ``read_pages`` with the default reader count, with the growth after warm-up.

Each page is rendered at 200 dpi capped at 1024 px and preprocessed into all four reference tensors
(CLIP 672, DINOv2 672, the 1024-px input and 2025 Pix2Struct patches), the most a page can need.

Run:  python benchmarks/inputs_throughput.py [--pages 2000] [--throughput-pages 240]
"""

import argparse
import io
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pymupdf
from PIL import Image

import mova.batch

# NOTE: torch and the model library are imported inside functions: spawned readers re-import this script,
# and the benchmark should measure readers as light as the CLI's (``import mova.batch`` loads neither).


def make_corpus(folder: Path, pages: int, *, pages_per_pdf: int = 100) -> None:
    """Write ``pages`` pages as PDFs of ``pages_per_pdf`` pages each."""
    yy, xx = np.mgrid[0:300, 0:400]
    photo = np.stack([xx * 255 // 400, yy * 255 // 300, (xx + yy) * 255 // 700], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=85)
    photo_bytes = buffer.getvalue()
    written = 0
    index = 0
    while written < pages:
        doc = pymupdf.open()
        xref = 0
        for _ in range(min(pages_per_pdf, pages - written)):
            page = doc.new_page()  # A4
            for line in range(40):
                page.insert_text((50, 60 + 18 * line), f"Line {line} of page {written + 1}: quarterly figures " * 2)
            page.draw_rect(pymupdf.Rect(60, 420, 300, 600), color=(0, 0, 0), fill=(0.2, 0.4, 0.8))
            rect = pymupdf.Rect(320, 420, 540, 585)
            xref = page.insert_image(rect, xref=xref) if xref else page.insert_image(rect, stream=photo_bytes)
            written += 1
        doc.save(folder / f"doc{index:03d}.pdf")
        index += 1


def preprocess_all(image: Image.Image) -> dict:
    """The four reference tensors of one page."""
    from mova.constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD
    from mova.image_ops import clip_style_transform, mean_fill, pix2struct_patches

    return {
        "clip": clip_style_transform(image, size=672, mean=CLIP_MEAN, std=CLIP_STD, pad_to_square=True),
        "dinov2": clip_style_transform(image, size=672, mean=IMAGENET_MEAN, std=IMAGENET_STD, pad_to_square=True),
        "sam_1024": clip_style_transform(image, size=1024, mean=CLIP_MEAN, std=CLIP_STD, pad_to_square=True),
        "pix2struct": pix2struct_patches(
            image, max_patches=2025, patch_size=16, pad_to_square=True, pad_fill=mean_fill(CLIP_MEAN)
        ),
    }


def reader_rate(folder: Path, workers: int, repeats: int) -> float:
    """Best pages/s of ``repeats`` passes of ``read_pages`` (the best filters out other load on a shared
    machine), each counted from the ``workers``-th page on: before it, the readers start."""
    rates = []
    for _ in range(repeats):
        done = 0
        for page in mova.batch.read_pages(folder, workers=workers, preprocess=preprocess_all):
            assert page.error is None, page.error
            done += 1
            if done == workers:
                start = time.perf_counter()
        assert done > workers, f"{done} pages: time more than the {workers} start-up pages"
        rates.append((done - workers) / (time.perf_counter() - start))
    return max(rates)


def _load_and_preprocess(unit):
    return preprocess_all(unit.load())


def threads_rate(units: list, workers: int, repeats: int) -> float:
    """Baseline: load (pymupdf) and preprocess in threads of this process; best of ``repeats``."""
    rates = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in pool.map(_load_and_preprocess, units):
                pass
            rates.append(len(units) / (time.perf_counter() - start))
    return max(rates)


def _rss_mb(process: psutil.Process, *, children: bool) -> float:
    total = process.memory_info().rss
    if children:
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total / 2**20


def memory_run(folder: Path, workers: int, *, pages: int, warmup: int, every: int) -> list[tuple[int, float, float]]:
    """(pages done, RSS of this process, RSS with readers) every ``every`` of the folder's ``pages``."""
    me = psutil.Process()
    samples = []
    done = 0
    for page in mova.batch.read_pages(folder, workers=workers, preprocess=preprocess_all):
        assert page.error is None, page.error
        del page
        done += 1
        if done == warmup or (done > warmup and done % every == 0) or done == pages:
            samples.append((done, _rss_mb(me, children=False), _rss_mb(me, children=True)))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=2000, help="pages streamed for the memory figure")
    parser.add_argument("--throughput-pages", type=int, default=240, help="pages timed per throughput figure")
    parser.add_argument("--workers", type=int, default=mova.batch.default_workers(), help="the default reader count")
    parser.add_argument("--warmup", type=int, default=200, help="pages before the memory baseline")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per throughput figure (best kept)")
    args = parser.parse_args()
    import torch

    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, default workers: {args.workers}")
    with tempfile.TemporaryDirectory() as folder:
        corpus, timed = Path(folder, "corpus"), Path(folder, "timed")
        corpus.mkdir()
        timed.mkdir()
        start = time.perf_counter()
        make_corpus(corpus, args.pages)
        written = time.perf_counter()
        units = mova.batch.find_pages(corpus, workers=args.workers)
        print(
            f"corpus: {len(units)} pages in {len(list(corpus.glob('*.pdf')))} PDFs, written in "
            f"{written - start:.1f} s, found in {time.perf_counter() - written:.1f} s; "
            f"rendered page size {units[0].load().size}"
        )

        make_corpus(timed, args.throughput_pages)
        one = reader_rate(timed, 1, args.repeats)
        print(f"throughput, 1 reader process:       {one:6.2f} pages/s")
        many = reader_rate(timed, args.workers, args.repeats)
        print(f"throughput, {args.workers} reader processes:     {many:6.2f} pages/s  (x{many / one:.2f})")
        threads = threads_rate(units[: args.throughput_pages], args.workers, args.repeats)
        print(f"baseline, {args.workers} threads in one process: {threads:6.2f} pages/s")

        every = max(1, args.pages // 10)
        samples = memory_run(corpus, args.workers, pages=len(units), warmup=args.warmup, every=every)
        base_self, base_all = samples[0][1], samples[0][2]
        print(f"memory over {len(units)} pages ({args.workers} readers), RSS in MiB (this process / with readers):")
        for done, own, total in samples:
            print(f"  after {done:5d} pages: {own:8.1f} / {total:8.1f}")
        growth_self = max(s[1] for s in samples) / base_self - 1
        growth_all = max(s[2] for s in samples) / base_all - 1
        print(
            f"growth after warm-up ({args.warmup} pages): this process {growth_self:+.1%}, "
            f"with readers {growth_all:+.1%} (max over samples vs first sample)"
        )


if __name__ == "__main__":
    main()
