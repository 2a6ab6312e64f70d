"""``distill show``: the terminal summary and the self-contained HTML page (tested in
headless Chromium: it renders, shows the funnel, and search and filters change the rows)."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
from distilled import build

from distill.cli import main
from distill.errors import DistillError
from distill.publish.page import write_html
from distill.publish.publish import publish
from distill.publish.show import summary


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    return build(tmp_path_factory.mktemp("distilled"))


@pytest.fixture(scope="module")
def report(distilled):
    return json.loads((distilled[1] / "report.json").read_text())


def test_terminal_summary_of_a_filter_output(distilled, report, capsys):
    _, filtered = distilled
    assert main(["show", "--data", str(filtered), "--samples", "2"]) == 0
    text = capsys.readouterr().out
    n, kept = report["rows_in"], report["kept"]
    assert f"filter output, {n} rows ({kept} kept, {n - kept} dropped)" in text
    assert "teacher: scripted-teacher" in text and "prompt: gsm8k-cot (cot)" in text
    assert "columns (" in text and "completion string" in text
    for s in report["stages"]:
        assert re.search(rf"^  {s['stage']}\s+{s['kept']}\s", text, re.MULTILINE), s["stage"]
    assert "verify: wrong answer" in text and "completion tokens: min" in text
    samples = text.split("samples:")[1]
    assert samples.count("[kept]") == 2 and "[dropped]" in samples


def test_summary_of_a_generated_and_a_published_folder(distilled, tmp_path):
    gen, filtered = distilled
    text = summary(gen)
    assert "dataset, 24 rows" in text and "funnel" not in text and "[row]" in text
    publish(filtered, tmp_path / "pub", test_size=0.25, format="alpaca")
    text = summary(tmp_path / "pub")
    assert "published dataset" in text and "(train " in text and "funnel:" in text
    assert "completion: Sam starts with" in text  # alpaca rows read back as prompt/completion
    with pytest.raises(DistillError, match="no dataset here"):
        summary(tmp_path)


def test_html_page_is_self_contained(distilled, tmp_path, capsys):
    _, filtered = distilled
    page = tmp_path / "page.html"
    assert main(["show", "--data", str(filtered), "--html", str(page)]) == 0
    html = page.read_text()
    assert f"wrote {page}" in capsys.readouterr().out
    urls = set(re.findall(r"(?:src|href)\s*=|https?://[^'\" ]+|@import|<link", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # nothing fetched from anywhere
    assert "id='funnel-chart'" in html and "class='hist-chart'" in html
    data = html.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    assert "</script>" not in data and len(json.loads(data)["rows"]) == 24


def test_html_sample_keeps_every_drop_reason(distilled, report, tmp_path):
    _, filtered = distilled
    html = write_html(filtered, tmp_path / "page.html", max_rows=6).read_text()
    data = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert {r["reason"] for r in data["rows"]} >= set(report["drop_reasons"])
    assert data["total"] == 24 and "of 24 rows embedded (a sample)" in html


def _browser_ready() -> str | None:
    """Why the browser test cannot run here, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    if not shutil.which("chromium"):
        return "Debian's chromium is not installed (apt-get install -y chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    return None


@pytest.fixture
def browser(tmp_path):
    reason = _browser_ready()
    if reason:
        pytest.skip(f"headless Chromium test skipped: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1200,1600",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_html_page_in_headless_chromium(distilled, report, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, filtered = distilled
    page = write_html(filtered, tmp_path / "page.html")
    browser.get(Path(page).resolve().as_uri())
    n = report["rows_in"]

    def visible():
        rows = browser.find_elements(By.CSS_SELECTOR, "#rows details.row")
        return [(r.get_attribute("data-status"), r.get_attribute("data-reason"), r.text)
                for r in rows]

    def count():
        return browser.find_element(By.ID, "count").text

    # renders: the funnel (one bar per stage, with its count), histograms and every row
    bars = browser.find_elements(By.CSS_SELECTOR, "#funnel-chart g.bar")
    assert [(b.get_attribute("data-stage"), int(b.get_attribute("data-count"))) for b in bars] \
        == [("input", n)] + [(s["stage"], s["kept"]) for s in report["stages"]]
    assert all(b.find_element(By.TAG_NAME, "rect").size["width"] > 0 for b in bars)
    assert "wrong answer" in browser.find_element(By.ID, "funnel").text
    assert browser.find_elements(By.CSS_SELECTOR, "svg.hist-chart rect")
    assert len(visible()) == n and count() == f"{n} of {n} rows"

    status, reason = Select(browser.find_element(By.ID, "status")), \
        Select(browser.find_element(By.ID, "reason"))
    status.select_by_value("dropped")
    assert len(visible()) == n - report["kept"]
    assert {s for s, _, _ in visible()} == {"dropped"}
    status.select_by_value("kept")
    assert len(visible()) == report["kept"] and {r for _, r, _ in visible()} == {""}
    status.select_by_value("all")
    reason.select_by_value("verify: wrong answer")
    assert len(visible()) == report["drop_reasons"]["verify: wrong answer"]
    assert {r for _, r, _ in visible()} == {"verify: wrong answer"}
    reason.select_by_value("all")

    search = browser.find_element(By.ID, "search")
    search.send_keys("finds 9 more")  # problem p6 only
    hits = visible()
    assert 0 < len(hits) < n and all("finds 9 more" in t for _, _, t in hits)
    assert count() == f"{len(hits)} of {n} rows"
    search.clear()
    search.send_keys("</b>")  # markup in a completion is text, not HTML
    hits = browser.find_elements(By.CSS_SELECTOR, "#rows details.row")
    assert hits and not browser.find_elements(By.CSS_SELECTOR, "#rows b")
    hits[0].click()
    assert "</script><b>raw</b>" in hits[0].find_elements(By.TAG_NAME, "pre")[1].text
    search.clear()
    search.send_keys("no row says this")
    assert visible() == [] and count() == f"0 of {n} rows"
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs


def test_html_page_marks_the_false_step(tmp_path, browser):
    """A row the ``steps`` stage dropped shows its completion with the false step marked."""
    import pyarrow as pa
    from selenium.webdriver.common.by import By

    from distill import io
    from distill.filters.pipeline import run_filter

    cats = "They had 20 - 12 = 12 cats <b>left</b>.\n#### 12"
    rows = [{"id": "cats", "question": "How many cats?", "completion": cats},
            {"id": "dogs", "question": "How many dogs?", "completion": "So 3 + 4 = 7 dogs."}]
    folder = tmp_path / "gen"
    io.ShardWriter(folder, pa.Table.from_pylist(rows).schema).write(rows)
    run_filter(folder, tmp_path / "filtered", stages=["steps"])
    page = write_html(tmp_path / "filtered", tmp_path / "page.html")
    browser.get(Path(page).resolve().as_uri())
    for card in browser.find_elements(By.CSS_SELECTOR, "#rows details.row"):
        card.click()
    marks = browser.find_elements(By.CSS_SELECTOR, "#rows mark.false-step")
    assert [m.text for m in marks] == ["20 - 12 = 12"]
    pre = marks[0].find_element(By.XPATH, "..")
    assert pre.text == cats and not browser.find_elements(By.CSS_SELECTOR, "#rows b")
    dropped = browser.find_element(By.CSS_SELECTOR, "#rows details[data-id='cats']")
    assert dropped.get_attribute("data-reason") == "steps: false step: 20 - 12 = 12"
