"""Make ``docs/results-page.png``: a results page of the shared landmarks, as Chromium shows it.

    .venv/bin/python tools/results_page_screenshot.py [--query PHOTO] [--out docs/results-page.png]

Indexes ``../shared/data/landmarks`` into a temporary embedded store with the default offline
extractor (ALIKED), queries one of its photos with the page asked for (``landmark query --html``),
has headless Chromium (Debian's ``chromium``) take a picture of the page, and stores it as a
palette PNG (a few hundred kB). Also prints the page's size and its thumbnails' bytes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LANDMARKS = ROOT.parent / "shared" / "data" / "landmarks"
WIDTH = 1100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", default=str(LANDMARKS / "berliner_dom" / "01.jpg"), help="the photo to query")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results-page.png"), help="where the PNG goes")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install -y chromium")

    from PIL import Image

    from landmark import config as cfg
    from landmark.embedded import stop
    from landmark.session import Session
    from landmark.settings import Settings
    from landmark.thumbnails import Thumbnails

    home = Path(tempfile.mkdtemp(prefix="landmark-screenshot-"))
    try:
        with Session(cfg.resolve(Settings, {"home": str(home), "extractor": "aliked"}, environ={})) as lm:
            lm.index([str(LANDMARKS)])
            result = lm.query(args.query, add=False, page=True, out=str(home / "query"))
            shown = Thumbnails(lm.store).read(m.uri for m in result.matches)
        page = Path(result.files["html"])
        mean = sum(map(len, shown.values())) / max(1, len(shown))
        print(f"page: {page.stat().st_size / 1000:.0f} kB for {len(result.matches)} matches, whose thumbnails "
              f"take {mean / 1000:.1f} kB each on average")
        shot = home / "shot.png"
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={WIDTH},3000", f"--screenshot={shot}", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        picture = Image.open(shot).convert("RGB")
        # Down to the page's own content: the first row of background below it ends the picture.
        pixels = picture.load()
        background = pixels[WIDTH - 2, picture.height - 2]
        bottom = picture.height
        while bottom > 1 and all(pixels[x, bottom - 1] == background for x in range(0, WIDTH, 7)):
            bottom -= 1
        picture = picture.crop((0, 0, WIDTH, min(picture.height, bottom + 16)))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
        print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1000:.0f} kB, {picture.width}x{picture.height})")
    finally:
        stop(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
