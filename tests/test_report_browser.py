"""The report in a real browser (headless Chromium at 1280x800): the first screen holds the
headline numbers and the validation verdict, and the page never scrolls sideways."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.report import report_inputs

from poseops.core import schema as S
from poseops.report.html import build_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 800
FAILED_RED = (192, 57, 43)  # the verdict's "FAILED" colour (#c0392b)

# Measures the laid-out page after load and writes the numbers into the DOM (--dump-dom).
MEASURE = """<script>
window.addEventListener('load', () => {
  const box = id => { const e = document.getElementById(id); if (!e) return null;
    const b = e.getBoundingClientRect();
    return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, text: e.innerText}; };
  const se = document.scrollingElement;
  const out = {innerWidth: window.innerWidth, innerHeight: window.innerHeight,
    scrollWidth: se.scrollWidth, clientWidth: se.clientWidth, scrollHeight: se.scrollHeight,
    ids: {}, wide: []};
  for (const id of ['summary', 'summary-test-rmse', 'summary-val-rmse', 'summary-test-pck',
                    'summary-verdict', 'summary-diagnosis', 'summary-worst', 'summary-next'])
    out.ids[id] = box(id);
  for (const t of document.querySelectorAll('table')) {  // a visible table wider than its box
    const w = t.parentElement;
    if (t.offsetParent !== null && w.scrollWidth > w.clientWidth + 1) out.wide.push(t.id);
  }
  const pre = document.createElement('pre'); pre.id = 'measure';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-background-networking", "--no-first-run", "--disable-component-update",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, check=True, timeout=120, capture_output=True, text=True)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install -y chromium)")
def test_first_screen_holds_the_answer_and_nothing_scrolls_sideways(tmp_path):
    from PIL import Image

    inp = report_inputs(tmp_path / "project", composition_metrics=True)
    inp.training = {"net type": "cspnext_s", "key metric": "test.rmse", "epochs": 60}
    page = build_html(inp, example_n=4)
    assert "<script" not in page  # the report itself has no script; the test adds one
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", MEASURE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri()).stdout
    m = json.loads(re.search(r'<pre id="measure">(.*?)</pre>', dom, re.S).group(1)
                   .replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                   .replace("&gt;", ">"))
    assert m["innerWidth"] == WIDTH and m["innerHeight"] <= HEIGHT
    # no horizontal scroll, for the page and for every visible table
    assert m["scrollWidth"] <= m["clientWidth"], m
    assert not m["wide"], f"tables wider than the page: {m['wide']}"
    assert m["scrollHeight"] > 3 * HEIGHT  # the evidence follows below the first screen
    # the first screen: the whole summary, with the numbers recomputed from the errors table
    for ident, b in m["ids"].items():
        assert b is not None, ident
        assert 0 <= b["top"] and b["bottom"] <= m["innerHeight"], (ident, b)
        assert b["right"] <= m["innerWidth"], (ident, b)
    test = inp.errors[(inp.errors[S.SPLIT] == S.TEST) & inp.errors[S.ERROR_PX].notna()]
    rmse = float(np.sqrt(np.mean(np.square(test[S.ERROR_PX]))))
    assert f"{rmse:.2f} px" in m["ids"]["summary-test-rmse"]["text"]
    assert f"{100 * (test[S.ERROR_PX] <= 5).mean():.1f} %" in m["ids"]["summary-test-pck"]["text"]
    assert "FAILED" in m["ids"]["summary-verdict"]["text"]
    assert "test_rmse_max" in m["ids"]["summary-verdict"]["text"]
    # the screenshot of the same first screen shows the red verdict where the DOM put it
    shot, plain = tmp_path / "first_screen.png", tmp_path / "report.html"
    plain.write_text(page)  # the page as shipped, no probe script
    _chromium(tmp_path, f"--screenshot={shot}", plain.as_uri())
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    assert rgb.shape[:2] == (HEIGHT, WIDTH)
    v = m["ids"]["summary-verdict"]
    region = rgb[int(v["top"]):int(v["bottom"]) + 1, int(v["left"]):int(v["right"]) + 1]
    red = (np.abs(region - np.array(FAILED_RED)).sum(axis=2) < 60).sum()
    assert red > 50, "the FAILED verdict is not drawn in the first screen"
    assert rgb.std() > 10, "blank screenshot"
